//! Power loss, not only a killed process: the server runs with its data directory on
//! LazyFs (tests/support/lazyfs.rs), a FUSE layer that forgets every write no fsync
//! covered when it "crashes". Each cycle drives every write path concurrently, SIGKILLs
//! the server mid-flight, crashes the file system, and then checks that every
//! acknowledged write survived with its effect, that `feedgraph check` passes, and that
//! the graph's listings agree with the records read by id.
//!
//! Needs /dev/fuse and the right to mount (root here). `POWER_LOSS_CYCLES` sets the
//! number of cycles (default 20).

#[path = "support/lazyfs.rs"]
mod lazyfs;

use std::io::{Read, Write};
use std::path::Path;

use lazyfs::LazyFs;

/// A scratch directory with a backing store and a LazyFs mounted over it.
fn mounted() -> (tempfile::TempDir, LazyFs) {
    let root = tempfile::tempdir().unwrap();
    let backing = root.path().join("backing");
    let mnt = root.path().join("mnt");
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let fs = LazyFs::mount(&backing, &mnt).unwrap_or_else(|e| {
        panic!(
            "mounting LazyFs failed: {e} (needs /dev/fuse: `modprobe fuse`, and root or \
             fusermount3 from Debian's fuse3 package)"
        )
    });
    (root, fs)
}

fn sync_dir(dir: &Path) {
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut buf).unwrap();
            Some(buf)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The layer itself: synced data and names survive a crash, nothing else does.
#[test]
fn lazyfs_forgets_exactly_what_no_sync_covered() {
    let (root, mut fs) = mounted();
    let mnt = root.path().join("mnt");

    // Durable: written, fsynced, and named in a directory that was fsynced after.
    let synced = |path: &Path, data: &[u8]| {
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        f
    };
    let kept = synced(&mnt.join("kept"), &[1u8; 10_000]);
    let empty = std::fs::File::create(mnt.join("empty")).unwrap();
    drop(synced(&mnt.join("a"), b"file a"));
    drop(synced(&mnt.join("b"), b"file b"));
    std::fs::create_dir(mnt.join("keep")).unwrap();
    drop(synced(&mnt.join("keep/c"), b"file c"));
    sync_dir(&mnt.join("keep"));
    sync_dir(&mnt);

    // Not durable: writes without a sync (an overwrite and an append)...
    use std::os::unix::fs::FileExt;
    kept.write_all_at(&[2u8; 100], 5_000).unwrap();
    kept.write_all_at(&[3u8; 5_000], 10_000).unwrap();
    (&empty).write_all(b"never synced").unwrap();
    // ... a new file, fsynced, whose directory never was ...
    drop(synced(&mnt.join("lost"), b"synced data, unsynced name"));
    // ... a directory with a synced file and a synced listing, its own name unsynced ...
    std::fs::create_dir(mnt.join("sub")).unwrap();
    drop(synced(&mnt.join("sub/inner"), b"x"));
    sync_dir(&mnt.join("sub"));
    // ... a rename over a file and an unlink.
    std::fs::rename(mnt.join("a"), mnt.join("b")).unwrap();
    std::fs::remove_file(mnt.join("empty")).unwrap();
    assert_eq!(read(&mnt.join("b")).unwrap(), b"file a");
    // Durable again: a rename in another directory, which is then fsynced.
    std::fs::rename(mnt.join("keep/c"), mnt.join("keep/d")).unwrap();
    sync_dir(&mnt.join("keep"));
    drop((kept, empty));

    let report = fs.crash().unwrap();
    assert_eq!(report.files_reverted, 2, "{report:?}");
    assert!(report.entries_undone >= 4, "{report:?}");

    assert_eq!(read(&mnt.join("kept")).unwrap(), vec![1u8; 10_000]);
    assert_eq!(read(&mnt.join("empty")).unwrap(), b"", "unlink undone, data lost");
    assert_eq!(read(&mnt.join("lost")), None, "name never synced");
    assert_eq!(read(&mnt.join("sub/inner")), None, "directory never synced");
    assert_eq!(read(&mnt.join("a")).unwrap(), b"file a", "rename undone");
    assert_eq!(read(&mnt.join("b")).unwrap(), b"file b", "rename undone");
    assert_eq!(read(&mnt.join("keep/c")), None, "synced rename kept");
    assert_eq!(read(&mnt.join("keep/d")).unwrap(), b"file c");
    let mut names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "empty", "keep", "kept"]);

    // Truncation is undone too, and a sync after it makes it stick.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("kept"))
        .unwrap();
    f.set_len(10).unwrap();
    drop(f);
    fs.crash().unwrap();
    assert_eq!(read(&mnt.join("kept")).unwrap().len(), 10_000);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("kept"))
        .unwrap();
    f.set_len(10).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs.crash().unwrap();
    assert_eq!(read(&mnt.join("kept")).unwrap(), vec![1u8; 10]);
}
