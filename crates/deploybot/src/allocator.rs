//! The global allocator: the system's, except for 8 KiB blocks, which get
//! two whole pages each.
//!
//! Every HTTP connection owns an 8 KiB read and an 8 KiB write buffer
//! (hyper's), and a controller holds one connection per agent: 10,000
//! agents, 10,000 connections. Most of each buffer is never written, since a
//! heartbeat's request and answer are a few hundred bytes. The system
//! allocator puts a header in front of every block and the next block right
//! behind it, so an 8 KiB buffer straddles three pages and its neighbours
//! make two of them resident. Here a buffer is two pages of its own, and
//! only the pages its bytes were written to cost memory (measured in
//! BENCHMARKS.md under issue #3).
//!
//! Blocks come from 2 MiB chunks mapped from the system and never unmapped.
//! A freed block is kept for reuse, up to [`KEPT`] of them; past that its
//! pages go back to the system, so a burst of connections does not keep its
//! memory once they are gone.
//!
//! Only the controller holds that many connections, so only it switches
//! this on ([`ConnectionBuffers::serve_blocks`], at start); the agent and
//! the CLI run on the system allocator alone. Linux only (the binary uses
//! the system allocator elsewhere).
//!
//! The one module of the binary with `unsafe` code: an allocator is made of
//! raw memory.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The size served here: hyper's buffers (`INIT_BUFFER_SIZE`, which is also
/// the read buffer's cap the controller sets), and std's and tokio's
/// buffered readers.
const BLOCK: usize = 8 * 1024;
const PAGE: usize = 4 * 1024;
/// Blocks are carved from mappings of this size.
const CHUNK: usize = 2 * 1024 * 1024;
/// Freed blocks kept with their pages (2 MiB); more are released.
const KEPT: usize = 256;

pub struct ConnectionBuffers {
    /// Set once, never cleared: blocks come from the chunks from then on.
    serving: AtomicBool,
    blocks: Mutex<Blocks>,
}

struct Blocks {
    /// Freed blocks with their pages, last freed first: each holds the
    /// address of the next in its first word (a page its user wrote anyway).
    kept: *mut u8,
    kept_count: usize,
    /// Freed blocks whose pages were released; kept out of the blocks
    /// themselves, since writing one would bring its page back.
    released: Addresses,
    /// The never-used rest of the current chunk.
    fresh: *mut u8,
    fresh_end: *mut u8,
    /// Every chunk mapped, to tell our blocks from the system's (8 KiB
    /// blocks allocated before `serving` was set are the system's).
    chunks: Addresses,
}

// SAFETY: the pointers are addresses of blocks owned by the allocator and
// only used while holding the mutex.
unsafe impl Send for Blocks {}

impl Blocks {
    /// Whether `block` is in one of our chunks.
    fn owns(&self, block: *mut u8) -> bool {
        let address = block as usize;
        self.chunks
            .iter()
            .any(|chunk| (chunk as usize..chunk as usize + CHUNK).contains(&address))
    }
}

impl ConnectionBuffers {
    pub const fn new() -> Self {
        Self {
            serving: AtomicBool::new(false),
            blocks: Mutex::new(Blocks {
                kept: ptr::null_mut(),
                kept_count: 0,
                released: Addresses::new(),
                fresh: ptr::null_mut(),
                fresh_end: ptr::null_mut(),
                chunks: Addresses::new(),
            }),
        }
    }

    /// From now on, 8 KiB blocks come from whole pages of their own.
    pub fn serve_blocks(&self) {
        self.serving.store(true, Ordering::Release);
    }

    fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn owns(&self, block: *mut u8) -> bool {
        self.lock().owns(block)
    }

    fn lock(&self) -> MutexGuard<'_, Blocks> {
        // Nothing panics while holding it.
        self.blocks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> *mut u8 {
        let mut blocks = self.lock();
        if !blocks.kept.is_null() {
            let block = blocks.kept;
            // SAFETY: a kept block holds the next kept block's address.
            blocks.kept = unsafe { block.cast::<*mut u8>().read() };
            blocks.kept_count -= 1;
            return block;
        }
        if let Some(block) = blocks.released.pop() {
            return block;
        }
        if blocks.fresh == blocks.fresh_end {
            let chunk = map_chunk();
            if chunk.is_null() || !blocks.chunks.push(chunk) {
                return ptr::null_mut();
            }
            blocks.fresh = chunk;
            // SAFETY: the end of the chunk just mapped.
            blocks.fresh_end = unsafe { chunk.add(CHUNK) };
        }
        let block = blocks.fresh;
        // SAFETY: `fresh` < `fresh_end`, both in one chunk, `BLOCK` apart.
        blocks.fresh = unsafe { block.add(BLOCK) };
        block
    }

    /// Takes `block` back if it came from [`Self::take`]; `false` if it is
    /// the system's.
    ///
    /// # Safety
    /// `block` is no longer used.
    unsafe fn give_back(&self, block: *mut u8) -> bool {
        {
            let mut blocks = self.lock();
            if !blocks.owns(block) {
                return false;
            }
            if blocks.kept_count < KEPT {
                // SAFETY: the block is ours again and `BLOCK` bytes long.
                unsafe { block.cast::<*mut u8>().write(blocks.kept) };
                blocks.kept = block;
                blocks.kept_count += 1;
                return true;
            }
        }
        // SAFETY: the block is ours; its contents need not survive.
        unsafe { libc::madvise(block.cast(), BLOCK, libc::MADV_DONTNEED) };
        // Out of memory for the list: the block's address space is lost,
        // its pages are not.
        let _ = self.lock().released.push(block);
        true
    }
}

impl Default for ConnectionBuffers {
    fn default() -> Self {
        Self::new()
    }
}

fn is_block(layout: Layout) -> bool {
    layout.size() == BLOCK && layout.align() <= PAGE
}

/// A fresh chunk straight from the kernel: its pages cost nothing until
/// written. Null when the system has no memory for it.
fn map_chunk() -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address the kernel picks.
    let chunk = unsafe {
        libc::mmap(
            ptr::null_mut(),
            CHUNK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if chunk == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        chunk.cast()
    }
}

// SAFETY: a block is handed out once until it is given back, is `BLOCK`
// bytes long and page-aligned (chunks are page-aligned, blocks a multiple
// of pages); every other layout goes to `System` unchanged.
unsafe impl GlobalAlloc for ConnectionBuffers {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_block(layout) && self.serving() {
            self.take()
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_block(layout) && self.serving() {
            let block = self.take();
            if !block.is_null() {
                unsafe { block.write_bytes(0, BLOCK) };
            }
            block
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller is done with `ptr`; the system's blocks go
        // back to the system.
        if !(is_block(layout) && self.serving() && unsafe { self.give_back(ptr) }) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (caller's contract): `new_size` with `layout.align()` is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !self.serving() || (!is_block(layout) && !is_block(new)) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Into or out of a block: move it.
        let moved = unsafe { self.alloc(new) };
        if !moved.is_null() {
            unsafe {
                ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        moved
    }
}

/// A growable stack of block addresses, its storage from `System` (the
/// allocator cannot allocate from itself).
struct Addresses {
    items: *mut *mut u8,
    len: usize,
    capacity: usize,
}

impl Addresses {
    const fn new() -> Self {
        Self {
            items: ptr::null_mut(),
            len: 0,
            capacity: 0,
        }
    }

    fn iter(&self) -> impl Iterator<Item = *mut u8> + '_ {
        // SAFETY: the first `len` slots were written by `push`.
        (0..self.len).map(|i| unsafe { self.items.add(i).read() })
    }

    fn pop(&mut self) -> Option<*mut u8> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len` < `capacity`, and the slot was written by `push`.
        Some(unsafe { self.items.add(self.len).read() })
    }

    /// False when there is no memory to grow.
    fn push(&mut self, block: *mut u8) -> bool {
        if self.len == self.capacity && !self.grow() {
            return false;
        }
        // SAFETY: `len` < `capacity` after growing.
        unsafe { self.items.add(self.len).write(block) };
        self.len += 1;
        true
    }

    fn grow(&mut self) -> bool {
        let capacity = (self.capacity * 2).max(512);
        let (Ok(old), Ok(new)) = (
            Layout::array::<*mut u8>(self.capacity),
            Layout::array::<*mut u8>(capacity),
        ) else {
            return false;
        };
        let items = if self.items.is_null() {
            // SAFETY: a non-zero layout.
            unsafe { System.alloc(new) }
        } else {
            // SAFETY: `items` was allocated by `System` with `old`.
            unsafe { System.realloc(self.items.cast(), old, new.size()) }
        };
        if items.is_null() {
            return false;
        }
        self.items = items.cast();
        self.capacity = capacity;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_layout() -> Layout {
        Layout::from_size_align(BLOCK, 1).unwrap()
    }

    fn serving() -> ConnectionBuffers {
        let buffers = ConnectionBuffers::new();
        buffers.serve_blocks();
        buffers
    }

    #[test]
    fn until_switched_on_every_block_is_the_systems() {
        let buffers = ConnectionBuffers::new();
        let layout = block_layout();
        let before = unsafe { buffers.alloc(layout) };
        assert!(!buffers.owns(before));
        buffers.serve_blocks();
        let after = unsafe { buffers.alloc(layout) };
        assert!(buffers.owns(after));
        assert_eq!(after as usize % PAGE, 0);
        // Each goes back where it came from.
        unsafe { buffers.dealloc(before, layout) };
        unsafe { buffers.dealloc(after, layout) };
        assert_eq!(unsafe { buffers.alloc(layout) }, after);
    }

    #[test]
    fn blocks_are_whole_distinct_pages_and_reused_last_freed_first() {
        let buffers = serving();
        let layout = block_layout();
        let blocks: Vec<*mut u8> = (0..300).map(|_| unsafe { buffers.alloc(layout) }).collect();
        let mut sorted = blocks.clone();
        sorted.sort();
        for pair in sorted.windows(2) {
            assert!(
                pair[1] as usize - pair[0] as usize >= BLOCK,
                "blocks overlap"
            );
        }
        for (i, &block) in blocks.iter().enumerate() {
            assert_eq!(block as usize % PAGE, 0, "not page-aligned");
            unsafe { block.write_bytes(i as u8, BLOCK) };
        }
        for (i, &block) in blocks.iter().enumerate() {
            let bytes = unsafe { std::slice::from_raw_parts(block, BLOCK) };
            assert!(
                bytes.iter().all(|&b| b == i as u8),
                "block {i} was overwritten"
            );
        }
        unsafe { buffers.dealloc(blocks[7], layout) };
        unsafe { buffers.dealloc(blocks[9], layout) };
        assert_eq!(unsafe { buffers.alloc(layout) }, blocks[9]);
        assert_eq!(unsafe { buffers.alloc(layout) }, blocks[7]);
    }

    #[test]
    fn blocks_freed_beyond_the_kept_ones_give_their_pages_back() {
        let buffers = serving();
        let layout = block_layout();
        let blocks: Vec<*mut u8> = (0..KEPT + 10)
            .map(|_| unsafe { buffers.alloc(layout) })
            .collect();
        for &block in &blocks {
            unsafe { block.write_bytes(0xAB, BLOCK) };
            unsafe { buffers.dealloc(block, layout) };
        }
        // The kept ones come back first, as they were; then the released
        // ones, zeroed by the kernel.
        for _ in 0..KEPT {
            let block = unsafe { buffers.alloc(layout) };
            assert_eq!(unsafe { block.add(BLOCK - 1).read() }, 0xAB);
        }
        for _ in 0..10 {
            let block = unsafe { buffers.alloc(layout) };
            assert!(blocks.contains(&block), "a released block is reused");
            let bytes = unsafe { std::slice::from_raw_parts(block, BLOCK) };
            assert!(bytes.iter().all(|&b| b == 0), "pages not given back");
        }
    }

    #[test]
    fn other_sizes_and_reallocations_keep_their_contents() {
        let buffers = serving();
        unsafe {
            let small = Layout::from_size_align(100, 8).unwrap();
            let p = buffers.alloc(small);
            p.write_bytes(1, 100);
            // Into a block, growing it past one, and back down.
            let p = buffers.realloc(p, small, BLOCK);
            assert_eq!(p as usize % PAGE, 0);
            assert_eq!(p.add(99).read(), 1);
            p.add(BLOCK - 1).write(2);
            let p = buffers.realloc(p, Layout::from_size_align(BLOCK, 8).unwrap(), 3 * BLOCK);
            assert_eq!((p.add(99).read(), p.add(BLOCK - 1).read()), (1, 2));
            let p = buffers.realloc(p, Layout::from_size_align(3 * BLOCK, 8).unwrap(), 50);
            assert_eq!(p.add(49).read(), 1);
            buffers.dealloc(p, Layout::from_size_align(50, 8).unwrap());

            let zeroed = buffers.alloc_zeroed(block_layout());
            assert!(
                std::slice::from_raw_parts(zeroed, BLOCK)
                    .iter()
                    .all(|&b| b == 0)
            );
            // A stricter alignment than a page is not a block's.
            let aligned = Layout::from_size_align(BLOCK, 2 * PAGE).unwrap();
            let p = buffers.alloc(aligned);
            assert_eq!(p as usize % (2 * PAGE), 0);
            buffers.dealloc(p, aligned);
        }
    }

    #[test]
    fn threads_allocating_and_freeing_at_once_never_share_a_block() {
        static BUFFERS: ConnectionBuffers = ConnectionBuffers::new();
        BUFFERS.serve_blocks();
        let layout = block_layout();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    // 4 × 300 blocks at once: more than are kept when freed.
                    for round in 0..20u32 {
                        let held: Vec<usize> = (0..300)
                            .map(|_| {
                                let block = unsafe { BUFFERS.alloc(layout) };
                                unsafe { block.write_bytes(t, BLOCK) };
                                block as usize
                            })
                            .collect();
                        for &block in &held {
                            let bytes =
                                unsafe { std::slice::from_raw_parts(block as *const u8, BLOCK) };
                            assert!(bytes.iter().all(|&b| b == t), "round {round}: shared");
                            unsafe { BUFFERS.dealloc(block as *mut u8, layout) };
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
