//! Block-parallel compression with output that does not depend on the thread count: the input
//! is cut into fixed-size blocks, each block is compressed on its own by a [`BlockCodec`]
//! (optionally primed with the tail of the previous block), and the compressed blocks are
//! written in order. Block boundaries depend only on the byte count, never on the number of
//! threads or on how the input arrives in `write` calls, so the output is the same bytes with
//! one thread or many; with one thread the blocks are compressed inline.
//!
//! The codecs: [`super::pargz`] (deflate blocks joined into one gzip member, pigz's
//! construction) and [`super::parzstd`] (independent zstd frames, concatenated).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

/// How one block is compressed. A worker thread owns its own codec (made by [`fork`]), so a
/// codec may keep a reusable context.
///
/// [`fork`]: BlockCodec::fork
pub trait BlockCodec: Send + 'static {
    /// Uncompressed bytes per block.
    fn block_size(&self) -> usize;
    /// How much of the end of one block primes the next (0: blocks are independent).
    fn dict_size(&self) -> usize;
    /// A codec with the same settings, for another worker.
    fn fork(&self) -> io::Result<Self>
    where
        Self: Sized;
    /// Compresses one block; `dict` is the tail of the previous block (empty for the first
    /// block or when [`dict_size`](BlockCodec::dict_size) is 0), `last` marks the final block.
    fn compress(&mut self, dict: &[u8], input: &[u8], last: bool) -> io::Result<Vec<u8>>;
}

/// A compressed block, and its input buffer handed back for the next block.
type Reply = io::Result<(Vec<u8>, Vec<u8>)>;

struct Job {
    dict: Vec<u8>,
    input: Vec<u8>,
    last: bool,
    reply: mpsc::SyncSender<Reply>,
}

struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new<C: BlockCodec>(threads: usize, codec: &C) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let rx = Arc::clone(&rx);
            let mut codec = codec.fork()?;
            workers.push(std::thread::spawn(move || {
                loop {
                    // the lock is held only to take the next job
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let result = codec
                        .compress(&job.dict, &job.input, job.last)
                        .map(|out| (out, job.input));
                    let _ = job.reply.send(result);
                }
            }));
        }
        Ok(Pool {
            jobs: Some(tx),
            workers,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

enum Pending {
    Done(io::Result<Vec<u8>>),
    Waiting(mpsc::Receiver<Reply>),
}

/// Uncompressed bytes a stream may have in flight (queued or being compressed): bounds memory
/// whatever the number of cores (zstd's 4 MiB blocks: at most 16 in flight).
const IN_FLIGHT: usize = 64 << 20;

/// A writer that compresses in blocks on `threads` threads and writes the compressed blocks,
/// in order, to `out`. At most `2 × threads` blocks (and [`IN_FLIGHT`] bytes) are in flight.
pub struct ParEncoder<W: Write, C: BlockCodec> {
    out: Option<W>,
    codec: C,
    block: Vec<u8>,
    dict: Vec<u8>,
    pool: Option<Pool>,
    pending: VecDeque<Pending>,
    max_pending: usize,
    /// Input buffers back from the workers: a block is filled into memory already mapped
    /// (a fresh 4 MiB buffer per block costs a page fault per 4 KiB on the writing thread).
    free: Vec<Vec<u8>>,
}

impl<W: Write, C: BlockCodec> ParEncoder<W, C> {
    pub fn new(out: W, codec: C, threads: usize) -> io::Result<Self> {
        let max_pending = (threads.max(1) * 2).min((IN_FLIGHT / codec.block_size()).max(2));
        let threads = threads.max(1).min(max_pending);
        let pool = if threads > 1 {
            Some(Pool::new(threads, &codec)?)
        } else {
            None
        };
        Ok(ParEncoder {
            out: Some(out),
            block: Vec::with_capacity(codec.block_size()),
            codec,
            dict: Vec::new(),
            pool,
            pending: VecDeque::new(),
            max_pending,
            free: Vec::new(),
        })
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("compressed stream already finished"))
    }

    /// Hands the current block to a worker (or compresses it here with one thread).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let size = self.codec.block_size();
        let next = self.free.pop().unwrap_or_else(|| Vec::with_capacity(size));
        let input = std::mem::replace(&mut self.block, next);
        let dict = std::mem::take(&mut self.dict);
        let keep = self.codec.dict_size();
        if !last && keep > 0 {
            self.dict = input[input.len().saturating_sub(keep)..].to_vec();
        }
        match &self.pool {
            None => {
                let bytes = self.codec.compress(&dict, &input, last)?;
                self.out()?.write_all(&bytes)?;
            }
            Some(pool) => {
                let (reply, rx) = mpsc::sync_channel(1);
                let sent = pool.jobs.as_ref().map(|jobs| {
                    jobs.send(Job {
                        dict,
                        input,
                        last,
                        reply,
                    })
                });
                let pending = match sent {
                    Some(Ok(())) => Pending::Waiting(rx),
                    _ => Pending::Done(Err(io::Error::other("compression worker pool stopped"))),
                };
                self.pending.push_back(pending);
                while self.pending.len() >= self.max_pending {
                    self.drain_one()?;
                }
            }
        }
        Ok(())
    }

    /// Writes the oldest block's output (waiting for it).
    fn drain_one(&mut self) -> io::Result<()> {
        let Some(p) = self.pending.pop_front() else {
            return Ok(());
        };
        let bytes = match p {
            Pending::Done(r) => r?,
            Pending::Waiting(rx) => {
                let (bytes, mut input) = rx
                    .recv()
                    .map_err(|_| io::Error::other("a compression worker stopped"))??;
                input.clear();
                self.free.push(input);
                bytes
            }
        };
        self.out()?.write_all(&bytes)
    }

    /// Compresses what is left (always one final block, possibly empty) and returns the inner
    /// writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        self.out
            .take()
            .ok_or_else(|| io::Error::other("compressed stream already finished"))
    }
}

impl<W: Write, C: BlockCodec> Write for ParEncoder<W, C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let size = self.codec.block_size();
        let n = buf.len().min(size - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == size {
            self.submit(false)?;
        }
        Ok(n)
    }
    /// Blocks are cut by size only (a flush must not change the bytes), so this flushes only
    /// what is already compressed.
    fn flush(&mut self) -> io::Result<()> {
        self.out()?.flush()
    }
}
