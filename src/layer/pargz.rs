//! Parallel, deterministic gzip: the input is cut into fixed-size blocks, each block is
//! deflated on its own (primed with the previous block's last 32 KiB, so the ratio stays that
//! of one stream) and ends on a byte boundary with a sync flush; the blocks are joined in order
//! under one gzip header and trailer — one standard gzip member that any gunzip reads (pigz's
//! construction). Cutting and scheduling are [`super::parallel`]'s, so the output is the same
//! bytes for any thread count.
//!
//! flate2 (with zlib-rs) does the deflating; this module only primes, ends and joins blocks.

use std::io::{self, Write};

use flate2::{Compress, FlushCompress, Status};

use super::parallel::{BlockCodec, ParEncoder};

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

/// The deflate codec of [`ParEncoder`]: primed blocks, each ending on a byte boundary.
pub struct Deflate {
    level: flate2::Compression,
}

impl BlockCodec for Deflate {
    fn block_size(&self) -> usize {
        BLOCK
    }
    fn dict_size(&self) -> usize {
        DICT
    }
    fn fork(&self) -> io::Result<Self> {
        Ok(Deflate { level: self.level })
    }
    fn compress(&mut self, dict: &[u8], input: &[u8], last: bool) -> io::Result<Vec<u8>> {
        deflate_block(self.level, dict, input, last)
    }
}

/// A gzip writer whose output is independent of `threads`.
pub struct ParGzEncoder<W: Write> {
    inner: ParEncoder<W, Deflate>,
    crc: crc32fast::Hasher,
    len: u64,
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
        Ok(ParGzEncoder {
            inner: ParEncoder::new(out, Deflate { level }, threads)?,
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    /// Compresses what is left, writes the trailer (CRC-32, length mod 2³²) and returns the
    /// inner writer.
    pub fn finish(self) -> io::Result<W> {
        let mut out = self.inner.finish()?;
        let crc = self.crc.finalize();
        let len = self.len as u32;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
