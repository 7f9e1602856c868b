//! What an org graph holds in memory, structure by structure, computed from lengths and
//! capacities (an estimate of heap bytes: allocator rounding and map overheads are
//! approximated). Logged once per org at start-up, so a change in layout shows up in
//! numbers rather than guesses.

use std::mem::size_of;

use super::OrgGraph;

/// Heap bytes of a vector's buffer.
fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// Heap bytes of a hash table with `buckets` buckets of `T` (one control byte each).
fn table_bytes<T>(buckets: usize) -> usize {
    buckets * (size_of::<T>() + 1)
}

/// An allocation of `n` bytes as the allocator rounds it (to 16 bytes; more for large).
fn alloc_bytes(n: usize) -> usize {
    if n == 0 { 0 } else { n.div_ceil(16) * 16 }
}

impl OrgGraph {
    /// Estimated heap bytes per structure of this graph, largest first.
    pub fn heap_report(&self) -> Vec<(&'static str, usize)> {
        let f = &self.feedback;
        let mut out = vec![
            (
                "petgraph nodes",
                self.graph.capacity().0 * (size_of::<super::NodeRef>() + 8),
            ),
            (
                "petgraph edges",
                self.graph.capacity().1 * (size_of::<super::EdgeData>() + 16),
            ),
            ("feedback ids and id lookup", f.id_heap_bytes()),
            ("feedback columns (other)", f.column_heap_bytes()),
            ("interned strings", self.strings.heap_bytes()),
            ("sessions", self.sessions.heap_bytes()),
            (
                "adapters",
                vec_bytes(&self.adapters)
                    + table_bytes::<(super::Sym, u32)>(self.adapter_by_id.capacity()),
            ),
            (
                "typed lists (feedback_in, children_in, linked_by_id)",
                [&self.feedback_in, &self.children_in, &self.linked_by_id]
                    .iter()
                    .map(|l| {
                        vec_bytes(l)
                            + l.iter()
                                .map(|v| alloc_bytes(v.capacity() * 4))
                                .sum::<usize>()
                    })
                    .sum(),
            ),
            ("counters", self.counters.heap_bytes()),
        ];
        out.sort_by_key(|e| std::cmp::Reverse(e.1));
        out
    }
}

/// The resident memory of this process in KiB (Linux `/proc/self/statm`; `None` elsewhere).
pub fn resident_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}
