//! LazyFs: a FUSE file system for tests that forgets, when it "crashes", every write no
//! fsync covered, the way a machine that loses power does.
//!
//! It passes every operation through to a backing directory and remembers what the last
//! syncs made durable:
//!
//! - **File contents and sizes** are durable as of the file's last `fsync`/`fdatasync`.
//!   The first write (or truncate) after a sync saves the old bytes of each 4 KiB page it
//!   touches and the old size (an undo log); a sync drops the log. `sync_file_range`,
//!   `close` and `flush` sync nothing.
//! - **Directory entries** (a created file or directory, an unlink, an rmdir, a rename)
//!   are durable only once their directory was fsynced, as POSIX promises and as the
//!   strictest real file systems behave: an fsync of a new file does not make its name
//!   durable. A rename between two directories needs both. Unlinked and replaced files are
//!   kept in a hidden directory of the backing store until a crash or unmount, so that an
//!   undone unlink brings the file back.
//!
//! [`LazyFs::crash`] unmounts, undoes every content change newer than its file's last sync
//! and then every directory operation newer than its directory's last sync (newest
//! first), and mounts again: the kernel's caches are gone with the mount, so what the
//! next process reads is exactly the durable image.
//!
//! Not modelled: torn or reordered writes inside one unsynced range (all unsynced writes
//! are lost together), hard links and symlinks (refused), renames of directories that
//! have pending entries inside them, `mmap` writes, extended attributes and times (times
//! pass through and are never reverted).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

/// The unit of the undo log.
const PAGE: u64 = 4096;
/// How long the kernel may cache names and attributes (every change goes through us).
const TTL: Duration = Duration::from_secs(1);
/// The backing directory's hidden folder for unlinked and replaced files.
const GRAVE: &str = ".lazyfs-grave";

/// What a crash threw away.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CrashReport {
    /// The files whose contents went back, and the entries undone (relative paths).
    pub paths: Vec<PathBuf>,
    /// Files whose contents or size went back to their last sync.
    pub files_reverted: usize,
    /// 4 KiB pages written back with their synced bytes.
    pub pages_restored: usize,
    /// Directory operations undone (creates, unlinks, renames).
    pub entries_undone: usize,
}

/// Counts of what the mounted file system saw since it was created.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// `write` requests.
    pub writes: u64,
    /// `fsync`/`fdatasync` of files.
    pub file_syncs: u64,
    /// `fsync` of directories.
    pub dir_syncs: u64,
}

/// The old state of one file since its last sync.
#[derive(Debug)]
struct Undo {
    /// The size at the last sync.
    len: u64,
    /// Synced bytes of each page changed since, by page number (only the part below `len`).
    pages: HashMap<u64, Vec<u8>>,
}

/// A directory operation not yet made durable.
#[derive(Debug)]
enum DirOp {
    /// A file or directory was created at this path.
    Create(PathBuf),
    /// The entry at `path` was removed; its inode waits at `grave`.
    Remove { path: PathBuf, grave: PathBuf },
    /// `from` was renamed to `to`, whose old inode (if any) waits at `displaced`.
    Rename {
        from: PathBuf,
        to: PathBuf,
        displaced: Option<PathBuf>,
    },
}

/// A directory operation and the directories whose fsync it still waits for.
#[derive(Debug)]
struct Pending {
    op: DirOp,
    dirs: HashSet<PathBuf>,
}

/// Everything the file system knows; one lock, taken by each request.
#[derive(Debug)]
struct State {
    backing: PathBuf,
    /// Inode number to the path (relative to `backing`) it lives at now.
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, (u64, File)>,
    next_fh: u64,
    undo: HashMap<u64, Undo>,
    pending: Vec<Pending>,
    graves: u64,
    counters: Counters,
}

fn errno(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

impl State {
    fn new(backing: PathBuf) -> State {
        let mut s = State {
            backing,
            paths: HashMap::new(),
            inos: HashMap::new(),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            undo: HashMap::new(),
            pending: Vec::new(),
            graves: 0,
            counters: Counters::default(),
        };
        s.paths.insert(1, PathBuf::new());
        s.inos.insert(PathBuf::new(), 1);
        s
    }

    fn full(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.backing.clone()
        } else {
            self.backing.join(rel)
        }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        let dir = self.path(parent)?;
        if dir.as_os_str().is_empty() && name == GRAVE {
            return Err(Errno::EACCES);
        }
        Ok(dir.join(name))
    }

    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.inos.get(rel) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(ino, rel.to_owned());
        self.inos.insert(rel.to_owned(), ino);
        ino
    }

    /// Moves the inodes at `from` (and below it) to `to`.
    fn move_path(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(u64, PathBuf)> = self
            .paths
            .iter()
            .filter_map(|(&ino, p)| {
                p.strip_prefix(from).ok().map(|rest| {
                    let new = if rest.as_os_str().is_empty() {
                        to.to_owned()
                    } else {
                        to.join(rest)
                    };
                    (ino, new)
                })
            })
            .collect();
        for (ino, new) in moved {
            if let Some(old) = self.paths.insert(ino, new.clone()) {
                self.inos.remove(&old);
            }
            self.inos.insert(new, ino);
        }
    }

    fn attr(&mut self, rel: &Path) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(self.full(rel)).map_err(|e| errno(&e))?;
        let ino = self.ino_for(rel);
        Ok(to_attr(ino, &m))
    }

    /// The next free name in the graveyard (relative to `backing`).
    fn grave(&mut self) -> io::Result<PathBuf> {
        std::fs::create_dir_all(self.backing.join(GRAVE))?;
        self.graves += 1;
        Ok(Path::new(GRAVE).join(self.graves.to_string()))
    }

    fn pend(&mut self, op: DirOp, dirs: &[&Path]) {
        self.pending.push(Pending {
            op,
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        });
    }

    /// Saves the synced bytes of every page of `[from, to)` not saved yet.
    fn save_range(&mut self, ino: u64, file: &File, from: u64, to: u64) -> io::Result<()> {
        let current = file.metadata()?.len();
        let undo = self.undo.entry(ino).or_insert_with(|| Undo {
            len: current,
            pages: HashMap::new(),
        });
        let to = to.min(undo.len);
        if from >= to {
            return Ok(());
        }
        for page in from / PAGE..=(to - 1) / PAGE {
            if undo.pages.contains_key(&page) {
                continue;
            }
            let start = page * PAGE;
            let want = (undo.len - start).min(PAGE) as usize;
            let mut buf = vec![0u8; want];
            let got = read_fully(file, &mut buf, start)?;
            buf.truncate(got);
            undo.pages.insert(page, buf);
        }
        Ok(())
    }

    /// Sets the size of `file` (inode `ino`), saving what a shrink removes.
    fn truncate(&mut self, ino: u64, file: &File, size: u64) -> io::Result<()> {
        self.save_range(ino, file, size, u64::MAX)?;
        file.set_len(size)
    }

    /// Makes the durable image the current state: forgets the undo log and the pending
    /// directory operations. Used at unmount without a crash.
    fn settle(&mut self) {
        self.undo.clear();
        self.pending.clear();
        let _ = std::fs::remove_dir_all(self.backing.join(GRAVE));
    }

    /// Undoes everything not synced, then forgets all inodes and handles.
    fn revert(&mut self) -> io::Result<CrashReport> {
        let mut report = CrashReport::default();
        self.handles.clear();
        let undo = std::mem::take(&mut self.undo);
        for (ino, u) in undo {
            let Some(rel) = self.paths.get(&ino) else {
                continue;
            };
            let f = match OpenOptions::new().write(true).open(self.full(rel)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for (page, bytes) in &u.pages {
                f.write_all_at(bytes, page * PAGE)?;
            }
            f.set_len(u.len)?;
            report.paths.push(rel.clone());
            report.files_reverted += 1;
            report.pages_restored += u.pages.len();
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending.into_iter().rev() {
            report.entries_undone += 1;
            report.paths.push(match &p.op {
                DirOp::Create(path) | DirOp::Remove { path, .. } => path.clone(),
                DirOp::Rename { to, .. } => to.clone(),
            });
            match p.op {
                DirOp::Create(path) => remove_any(&self.full(&path))?,
                DirOp::Remove { path, grave } => {
                    restore(&self.full(&grave), &self.full(&path))?;
                }
                DirOp::Rename {
                    from,
                    to,
                    displaced,
                } => {
                    restore(&self.full(&to), &self.full(&from))?;
                    if let Some(grave) = displaced {
                        restore(&self.full(&grave), &self.full(&to))?;
                    }
                }
            }
        }
        match std::fs::remove_dir_all(self.backing.join(GRAVE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.paths.clear();
        self.inos.clear();
        self.paths.insert(1, PathBuf::new());
        self.inos.insert(PathBuf::new(), 1);
        Ok(report)
    }
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns bytes read.
fn read_fully(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Removes a file or a directory tree; absent is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Moves `from` back to `to`, replacing whatever is there; absent `from` is fine.
fn restore(from: &Path, to: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(from).is_err() {
        return Ok(());
    }
    remove_any(to)?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(from, to)
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = u32::try_from(nanos).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nanos),
        Err(_) => UNIX_EPOCH,
    }
}

fn to_attr(ino: u64, m: &Metadata) -> FileAttr {
    let kind = if m.is_dir() {
        FileType::Directory
    } else if m.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: system_time(m.atime(), m.atime_nsec()),
        mtime: system_time(m.mtime(), m.mtime_nsec()),
        ctime: system_time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        uid: m.uid(),
        gid: m.gid(),
        rdev: u32::try_from(m.rdev()).unwrap_or(0),
        blksize: 4096,
        flags: 0,
    }
}

/// Backing files are always opened readable: the kernel fills its page cache through
/// whichever handle of the inode it has, a write-only one included.
fn open_options(flags: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true);
    if OpenFlags(flags).acc_mode() != OpenAccMode::O_RDONLY {
        o.write(true);
    }
    o
}

/// The file system the kernel talks to; shares its state with [`LazyFs`].
struct Fs {
    state: Arc<Mutex<State>>,
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.state.lock();
        match st.child(parent, name).and_then(|p| st.attr(&p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut st = self.state.lock();
        if let Some(fh) = fh
            && let Some((_, f)) = st.handles.get(&fh.0)
        {
            match f.metadata() {
                Ok(m) => reply.attr(&TTL, &to_attr(ino.0, &m)),
                Err(e) => reply.error(errno(&e)),
            }
            return;
        }
        match st.path(ino).and_then(|p| st.attr(&p)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.state.lock();
        let result = (|| -> Result<FileAttr, Errno> {
            let rel = st.path(ino)?;
            let full = st.full(&rel);
            if let Some(mode) = mode {
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| errno(&e))?;
            }
            if let Some(size) = size {
                let file = match fh.and_then(|fh| st.handles.get(&fh.0)) {
                    Some((_, f)) => f.try_clone(),
                    None => OpenOptions::new().read(true).write(true).open(&full),
                }
                .map_err(|e| errno(&e))?;
                st.truncate(ino.0, &file, size).map_err(|e| errno(&e))?;
            }
            st.attr(&rel)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.state.lock();
        let result = (|| -> Result<FileAttr, Errno> {
            let dir = st.path(parent)?;
            let rel = st.child(parent, name)?;
            let full = st.full(&rel);
            std::fs::create_dir(&full).map_err(|e| errno(&e))?;
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & !umask))
                .map_err(|e| errno(&e))?;
            st.pend(DirOp::Create(rel.clone()), &[&dir]);
            st.attr(&rel)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, true, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state.lock();
        let result = (|| -> Result<(), Errno> {
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            let from_dir = st.path(parent)?;
            let to_dir = st.path(newparent)?;
            let from = st.child(parent, name)?;
            let to = st.child(newparent, newname)?;
            let (full_from, full_to) = (st.full(&from), st.full(&to));
            let from_meta = std::fs::symlink_metadata(&full_from).map_err(|e| errno(&e))?;
            let displaced = match std::fs::symlink_metadata(&full_to) {
                Ok(m) => {
                    if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                        return Err(Errno::EEXIST);
                    }
                    if m.is_dir() != from_meta.is_dir() {
                        return Err(if m.is_dir() {
                            Errno::EISDIR
                        } else {
                            Errno::ENOTDIR
                        });
                    }
                    if m.is_dir()
                        && std::fs::read_dir(&full_to)
                            .map_err(|e| errno(&e))?
                            .next()
                            .is_some()
                    {
                        return Err(Errno::ENOTEMPTY);
                    }
                    let grave = st.grave().map_err(|e| errno(&e))?;
                    std::fs::rename(&full_to, st.full(&grave)).map_err(|e| errno(&e))?;
                    st.move_path(&to, &grave);
                    Some(grave)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(errno(&e)),
            };
            if let Err(e) = std::fs::rename(&full_from, &full_to) {
                if let Some(grave) = &displaced {
                    let _ = std::fs::rename(st.full(grave), &full_to);
                    st.move_path(grave, &to);
                }
                return Err(errno(&e));
            }
            st.move_path(&from, &to);
            st.pend(
                DirOp::Rename {
                    from,
                    to,
                    displaced,
                },
                &[&from_dir, &to_dir],
            );
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.state.lock();
        let result = (|| -> Result<u64, Errno> {
            let rel = st.path(ino)?;
            let file = open_options(flags.0)
                .open(st.full(&rel))
                .map_err(|e| errno(&e))?;
            if flags.0 & libc::O_TRUNC != 0 {
                st.truncate(ino.0, &file, 0).map_err(|e| errno(&e))?;
            }
            let fh = st.next_fh;
            st.next_fh += 1;
            st.handles.insert(fh, (ino.0, file));
            Ok(fh)
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.state.lock();
        let Some((_, file)) = st.handles.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let mut buf = vec![0u8; size as usize];
        match read_fully(file, &mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.state.lock();
        let result = (|| -> io::Result<()> {
            let file = match st.handles.get(&fh.0) {
                Some((_, f)) => f.try_clone()?,
                None => return Err(io::Error::from_raw_os_error(libc::EBADF)),
            };
            st.save_range(ino.0, &file, offset, offset + data.len() as u64)?;
            file.write_all_at(data, offset)?;
            st.counters.writes += 1;
            Ok(())
        })();
        match result {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state.lock();
        st.undo.remove(&ino.0);
        st.counters.file_syncs += 1;
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.state.lock();
        let result = (|| -> Result<Vec<(u64, FileType, std::ffi::OsString)>, Errno> {
            let rel = st.path(ino)?;
            let mut names: Vec<(std::ffi::OsString, bool)> = std::fs::read_dir(st.full(&rel))
                .map_err(|e| errno(&e))?
                .filter_map(Result::ok)
                .filter(|e| !(rel.as_os_str().is_empty() && e.file_name() == GRAVE))
                .map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_dir())))
                .collect();
            names.sort();
            let parent = rel.parent().map_or(1, |p| st.ino_for(p));
            let mut out = vec![
                (ino.0, FileType::Directory, ".".into()),
                (parent, FileType::Directory, "..".into()),
            ];
            for (name, is_dir) in names {
                let child = st.ino_for(&rel.join(&name));
                let kind = if is_dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                out.push((child, kind, name));
            }
            Ok(out)
        })();
        match result {
            Ok(entries) => {
                for (i, (child, kind, name)) in
                    entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state.lock();
        let Ok(dir) = st.path(ino) else {
            reply.error(Errno::ENOENT);
            return;
        };
        for p in &mut st.pending {
            p.dirs.remove(&dir);
        }
        st.pending.retain(|p| !p.dirs.is_empty());
        st.counters.dir_syncs += 1;
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.state.lock();
        let result = (|| -> Result<(FileAttr, u64), Errno> {
            let dir = st.path(parent)?;
            let rel = st.child(parent, name)?;
            let full = st.full(&rel);
            let existed = std::fs::symlink_metadata(&full).is_ok();
            let mut options = open_options(flags);
            options.create(true).mode(mode & !umask);
            if flags & libc::O_EXCL != 0 {
                options.create_new(true);
            }
            if OpenFlags(flags).acc_mode() == OpenAccMode::O_RDONLY {
                // create(2) needs write access to the backing file to make it.
                options.write(true);
            }
            let file = options.open(&full).map_err(|e| errno(&e))?;
            let ino = st.ino_for(&rel);
            if existed {
                if flags & libc::O_TRUNC != 0 {
                    st.truncate(ino, &file, 0).map_err(|e| errno(&e))?;
                }
            } else {
                st.pend(DirOp::Create(rel.clone()), &[&dir]);
                st.undo.insert(
                    ino,
                    Undo {
                        len: 0,
                        pages: HashMap::new(),
                    },
                );
            }
            let attr = st.attr(&rel)?;
            let fh = st.next_fh;
            st.next_fh += 1;
            st.handles.insert(fh, (ino, file));
            Ok((attr, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

impl Fs {
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let mut st = self.state.lock();
        let result = (|| -> Result<(), Errno> {
            let parent_path = st.path(parent)?;
            let rel = st.child(parent, name)?;
            let full = st.full(&rel);
            let m = std::fs::symlink_metadata(&full).map_err(|e| errno(&e))?;
            if dir {
                if !m.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
                if std::fs::read_dir(&full)
                    .map_err(|e| errno(&e))?
                    .next()
                    .is_some()
                {
                    return Err(Errno::ENOTEMPTY);
                }
            } else if m.is_dir() {
                return Err(Errno::EISDIR);
            }
            let grave = st.grave().map_err(|e| errno(&e))?;
            std::fs::rename(&full, st.full(&grave)).map_err(|e| errno(&e))?;
            st.move_path(&rel, &grave);
            st.pend(DirOp::Remove { path: rel, grave }, &[&parent_path]);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted LazyFs: the mount point shows the backing directory; [`LazyFs::crash`]
/// drops every unsynced change. Unmounts when dropped (keeping all changes).
pub struct LazyFs {
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
}

impl LazyFs {
    /// Mounts a LazyFs of `backing` (a directory) at `mountpoint` (an empty directory).
    /// Needs /dev/fuse and the right to mount (root, or fusermount3 installed).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyFs> {
        let state = Arc::new(Mutex::new(State::new(backing.canonicalize()?)));
        let mut fs = LazyFs {
            mountpoint: mountpoint.to_owned(),
            state,
            session: None,
        };
        fs.session = Some(fs.spawn()?);
        Ok(fs)
    }

    fn spawn(&self) -> io::Result<fuser::BackgroundSession> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("lazyfs".into()),
            MountOption::Subtype("lazyfs".into()),
        ];
        fuser::spawn_mount(
            Fs {
                state: self.state.clone(),
            },
            &self.mountpoint,
            &config,
        )
    }

    /// Unmounts, retrying while the kernel still holds the mount busy (files a killed
    /// process had open are released asynchronously).
    fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mountpoint = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?;
            // SAFETY: a valid NUL-terminated path; umount2 only reads it.
            let rc = unsafe { libc::umount2(mountpoint.as_ptr(), 0) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            self.session = Some(session);
            return Err(err);
        }
        // The kernel ended the session; its thread returns (its own unmount finds nothing
        // left to do).
        session.join()
    }

    /// Power loss: unmounts (the process using the mount must be gone), drops every change
    /// no sync covered, and mounts the durable image again.
    pub fn crash(&mut self) -> io::Result<CrashReport> {
        let context = |what: &'static str| {
            move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
        };
        self.unmount().map_err(context("unmounting"))?;
        let report = self.state.lock().revert().map_err(context("reverting"))?;
        self.session = Some(self.spawn().map_err(context("mounting again"))?);
        Ok(report)
    }

    /// What the file system saw so far.
    pub fn counters(&self) -> Counters {
        self.state.lock().counters
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if self.unmount().is_ok() {
            self.state.lock().settle();
        }
    }
}
