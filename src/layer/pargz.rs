//! Parallel, deterministic gzip: the input is cut into fixed-size blocks, each block is
//! deflated on its own (primed with the previous block's last 32 KiB, so the ratio stays that
//! of one stream) and ends on a byte boundary with a sync flush; the blocks are joined in order
//! under one gzip header and trailer — one standard gzip member that any gunzip reads (pigz's
//! construction). Block boundaries depend only on the byte count, never on the number of
//! threads or on how the input arrives in `write` calls, so the output is the same bytes with
//! one thread or many; with one thread the blocks are compressed inline.
//!
//! flate2 (with zlib-rs) does the deflating; this module only cuts, schedules and joins.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

/// Uncompressed bytes per block (pigz uses 128 KiB; larger blocks mean fewer sync markers).
pub const BLOCK: usize = 256 << 10;
/// Deflate's window: how much of the previous block primes the next.
const DICT: usize = 32 << 10;

/// Deflates one block. `last` ends the stream (BFINAL); other blocks end with a sync flush
/// (an empty stored block), so the next one starts on a byte boundary.
fn deflate_block(
    level: flate2::Compression,
    dict: &[u8],
    input: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(level, false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out: Vec<u8> = Vec::with_capacity(input.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() == input.len() as u64;
        let done = if last {
            status == Status::StreamEnd
        } else {
            // zlib's rule for a sync flush: it is complete once a call leaves output space over
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
    }
}

struct Job {
    dict: Vec<u8>,
    input: Vec<u8>,
    last: bool,
    reply: mpsc::SyncSender<io::Result<Vec<u8>>>,
}

struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: flate2::Compression) -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        // the lock is held only to take the next job
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let result = deflate_block(level, &job.dict, &job.input, job.last);
                        let _ = job.reply.send(result);
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(tx),
            workers,
        }
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
    Waiting(mpsc::Receiver<io::Result<Vec<u8>>>),
}

/// A gzip writer whose output is independent of `threads`.
pub struct ParGzEncoder<W: Write> {
    out: Option<W>,
    level: flate2::Compression,
    block: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
    pool: Option<Pool>,
    pending: VecDeque<Pending>,
    max_pending: usize,
}

impl<W: Write> ParGzEncoder<W> {
    /// Writes the gzip header at once: no name, no comment, mtime 0, OS 255 (unknown) — the
    /// header flate2's `GzBuilder` wrote for mlimg's layers before.
    pub fn new(mut out: W, level: flate2::Compression, threads: usize) -> io::Result<Self> {
        let xfl = match level.level() {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        let threads = threads.max(1);
        Ok(ParGzEncoder {
            out: Some(out),
            level,
            block: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
            pool: (threads > 1).then(|| Pool::new(threads, level)),
            pending: VecDeque::new(),
            max_pending: threads * 2,
        })
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    /// Hands the current block to a worker (or deflates it here with one thread).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let input = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.dict);
        if !last {
            self.dict = input[input.len().saturating_sub(DICT)..].to_vec();
        }
        match &self.pool {
            None => {
                let bytes = deflate_block(self.level, &dict, &input, last)?;
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
                    _ => Pending::Done(Err(io::Error::other("gzip worker pool stopped"))),
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
            Pending::Waiting(rx) => rx
                .recv()
                .map_err(|_| io::Error::other("a gzip worker stopped"))??,
        };
        self.out()?.write_all(&bytes)
    }

    /// Compresses what is left, writes the trailer (CRC-32, length mod 2³²) and returns the
    /// inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        let len = self.len as u32;
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        if self.block.len() == BLOCK {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // compressible but not trivial: text-like runs with a counter
        let mut v = Vec::with_capacity(n);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(format!("line {i} of the sample {}\n", i * 7919 % 1013).as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn gz(data: &[u8], threads: usize, piece: usize) -> Vec<u8> {
        let mut e = ParGzEncoder::new(Vec::new(), flate2::Compression::default(), threads).unwrap();
        for chunk in data.chunks(piece.max(1)) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_write_size_and_gunzip_reads_them() {
        for n in [
            0,
            1,
            1000,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK,
            5 * BLOCK + 12345,
        ] {
            let data = sample(n);
            let one = gz(&data, 1, 8192);
            for (threads, piece) in [(2, 8192), (3, 1), (4, 1 << 20), (1, 777)] {
                if n > 100_000 && piece == 1 {
                    continue; // byte-at-a-time over megabytes is slow in debug builds
                }
                assert_eq!(
                    gz(&data, threads, piece),
                    one,
                    "{n} bytes, {threads} threads, writes of {piece}"
                );
            }
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{n} bytes round trip");
            // one gzip member: MultiGzDecoder would read more members; GzDecoder stops after one
            assert_eq!(&one[..4], &[0x1f, 0x8b, 8, 0]);
        }
    }

    #[test]
    fn ratio_stays_close_to_one_stream() {
        let data = sample(4 * BLOCK);
        let par = gz(&data, 2, 8192);
        let mut one = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        one.write_all(&data).unwrap();
        let one = one.finish().unwrap();
        // primed blocks cost a few bytes each, not a restart of the dictionary
        assert!(
            (par.len() as f64) < one.len() as f64 * 1.02 + 64.0,
            "{} vs {}",
            par.len(),
            one.len()
        );
    }

    #[test]
    fn system_gzip_accepts_the_stream() {
        let mut child = std::process::Command::new("gzip")
            .args(["-t", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("gzip (an essential Debian package) runs");
        let data = gz(&sample(3 * BLOCK + 99), 2, 8192);
        child.stdin.take().unwrap().write_all(&data).unwrap();
        assert!(
            child.wait().unwrap().success(),
            "gzip -t rejected the stream"
        );
    }
}
