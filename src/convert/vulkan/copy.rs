//! A small persistent thread pool for the converter's host-side copies (source rows into the upload buffer,
//! NV12 rows out of the readback buffer). One core's memcpy moves ~10-15 GB/s, far less than memory and PCIe
//! offer, and a 4K frame is 33 MB in and 12 MB out; spawning threads per frame cost ~0.4 ms at 4K, so the
//! workers live as long as the converter and sleep on a condvar between frames.
//!
//! The pool copies raw byte ranges ([`Piece`]s); [`CopyPool::run`] is `unsafe` and returns only once every piece
//! is copied, so the caller's borrows cover the whole time the workers touch the memory.

#![allow(unsafe_code)] // FFI edge: every unsafe block carries a SAFETY note

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Pieces are split to at most this many bytes, so work spreads over the threads.
const PIECE_BYTES: usize = 1 << 20;
/// Batches smaller than this are copied by the calling thread alone (waking workers costs more).
const PARALLEL_MIN: usize = 512 << 10;
/// Most threads a batch uses, the caller included.
const MAX_THREADS: usize = 8;

/// One copy: `len` bytes from address `src` to address `dst` (addresses as integers so pieces are `Send`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub dst: usize,
    pub src: usize,
    pub len: usize,
}

#[derive(Debug, Default)]
struct State {
    pieces: Vec<Piece>,
    next: usize,
    pending: usize,
    generation: u64,
    shutdown: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock can only come from a panic in this module's bookkeeping; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take and copy pieces of the current batch until none is left.
    fn drain<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        while let Some(&p) = st.pieces.get(st.next) {
            st.next += 1;
            drop(st);
            copy(p);
            st = self.lock();
            st.pending -= 1;
            if st.pending == 0 {
                self.done.notify_all();
            }
        }
        st
    }
}

fn copy(p: Piece) {
    // SAFETY: pieces only reach a thread through `CopyPool::run`, whose caller guarantees that both ranges are
    // valid, the destinations disjoint from each other and from every source, and that nothing else touches
    // them until `run` returns; `run` returns only after every piece has been copied.
    unsafe { std::ptr::copy_nonoverlapping(p.src as *const u8, p.dst as *mut u8, p.len) };
}

/// Worker threads for large copies (none on a one-core machine).
#[derive(Debug)]
pub struct CopyPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Reused list of split pieces.
    split: Vec<Piece>,
}

impl CopyPool {
    /// Up to [`MAX_THREADS`] − 1 workers (the caller is the last thread). Threads that cannot be spawned are
    /// simply not used.
    pub fn new() -> CopyPool {
        let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(MAX_THREADS);
        let shared = Arc::new(Shared::default());
        let workers = (1..threads)
            .filter_map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new().name(format!("vk-copy-{i}")).spawn(move || worker(&s)).ok()
            })
            .collect();
        CopyPool { shared, workers, split: Vec::new() }
    }

    /// Copy every piece, in parallel when the batch is large; returns when all are done.
    ///
    /// # Safety
    /// Every piece's source must be valid for reads and its destination valid for writes of `len` bytes,
    /// destinations must not overlap each other or any source, and nothing else may access these ranges until
    /// this call returns.
    pub unsafe fn run(&mut self, pieces: &[Piece]) {
        let total: usize = pieces.iter().map(|p| p.len).sum();
        if total < PARALLEL_MIN || self.workers.is_empty() {
            pieces.iter().copied().for_each(copy);
            return;
        }
        self.split.clear();
        for p in pieces {
            let mut off = 0;
            while off < p.len {
                let len = (p.len - off).min(PIECE_BYTES);
                self.split.push(Piece { dst: p.dst + off, src: p.src + off, len });
                off += len;
            }
        }
        let s = &self.shared;
        let mut st = s.lock();
        st.pieces.clear();
        st.pieces.extend_from_slice(&self.split);
        st.next = 0;
        st.pending = st.pieces.len();
        st.generation = st.generation.wrapping_add(1);
        s.work.notify_all();
        let mut st = s.drain(st);
        while st.pending > 0 {
            st = s.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    let mut st = s.lock();
    loop {
        while st.generation == seen && !st.shutdown {
            st = s.work.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.shutdown {
            return;
        }
        seen = st.generation;
        st = s.drain(st);
    }
}

impl Drop for CopyPool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_large_and_small_batches() {
        let mut pool = CopyPool::new();
        for size in [10usize, 100_000, 3 << 20] {
            let src: Vec<u8> = (0..2 * size).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut dst = vec![0u8; 2 * size + 16];
            let pieces = [
                Piece { dst: dst.as_mut_ptr() as usize + 16, src: src.as_ptr() as usize, len: size },
                Piece { dst: dst.as_mut_ptr() as usize + 16 + size, src: src.as_ptr() as usize + size, len: size },
            ];
            // SAFETY: both pieces lie inside `src`/`dst`, destinations are disjoint, nothing else runs.
            unsafe { pool.run(&pieces) };
            assert_eq!(&dst[16..], &src[..], "{size}");
            assert_eq!(&dst[..16], &[0u8; 16]);
        }
        for _ in 0..50 {
            let src = vec![9u8; 1 << 20];
            let mut dst = vec![0u8; 1 << 20];
            let p = [Piece { dst: dst.as_mut_ptr() as usize, src: src.as_ptr() as usize, len: 1 << 20 }];
            // SAFETY: as above.
            unsafe { pool.run(&p) };
            assert!(dst.iter().all(|&b| b == 9));
        }
    }
}
