//! Parallel, deterministic zstd: the input is cut into fixed 4 MiB blocks, each compressed as
//! its own zstd frame (level 3, content size in the frame header, no checksum: the layer's
//! sha256 covers the bytes), the frames concatenated in order. RFC 8878 §3.1 defines zstd data
//! as one or more frames and every decoder reads them back to back (libzstd, `zstd -d`, Go's
//! klauspost/compress that containerd and containers/image use; containers/storage's
//! zstd:chunked layers are multi-frame by design).
//!
//! Why not zstd's own multi-threaded mode (what mlimg used before): its output does not depend
//! on the worker count either, but its jobs re-load the previous job's window and the caller's
//! thread serialises the hand-over, so on 2 cores it reached 1.25× a single thread for a whole
//! layer (docs/benchmarks.md, "Parallel compression"). Independent frames scale like pigz's
//! gzip blocks; the price is the matches a frame cannot take from the one before it, about
//! 0.5 % of output size at 4 MiB (1 % at 2 MiB, 2 % at 1 MiB, measured on a 763 MiB tar of
//! Python packages and shared libraries with `zstd -3`).

use std::io;

use super::parallel::BlockCodec;

/// Uncompressed bytes per frame.
pub const BLOCK: usize = 4 << 20;
/// mlimg's zstd level for layers.
pub const LEVEL: i32 = 3;

/// The zstd codec of [`super::parallel::ParEncoder`]: one frame per block, with a compression
/// context (and an output buffer) kept per worker.
pub struct Frames {
    ctx: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

impl Frames {
    pub fn new() -> io::Result<Frames> {
        let mut ctx = zstd::bulk::Compressor::new(LEVEL)?;
        ctx.include_checksum(false)?;
        ctx.include_contentsize(true)?;
        Ok(Frames {
            ctx,
            scratch: Vec::new(),
        })
    }
}

impl BlockCodec for Frames {
    fn block_size(&self) -> usize {
        BLOCK
    }
    fn dict_size(&self) -> usize {
        0
    }
    fn fork(&self) -> io::Result<Self> {
        Frames::new()
    }
    /// The final block may be empty: an empty input still gives one (empty) frame, so a layer
    /// is never zero bytes.
    fn compress(&mut self, _dict: &[u8], input: &[u8], _last: bool) -> io::Result<Vec<u8>> {
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(input.len()));
        let n = self.ctx.compress_to_buffer(input, &mut self.scratch)?;
        // a copy of the exact length: a pending block holds its compressed size, not the bound
        Ok(self.scratch[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::super::parallel::ParEncoder;
    use super::*;
    use std::io::{Read, Write};

    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut x = 7u64;
        while v.len() < n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.extend_from_slice(format!("row {} {:x}\n", v.len() % 977, x >> 44).as_bytes());
        }
        v.truncate(n);
        v
    }

    fn zst(data: &[u8], threads: usize, piece: usize) -> Vec<u8> {
        let mut e = ParEncoder::new(Vec::new(), Frames::new().unwrap(), threads).unwrap();
        for chunk in data.chunks(piece.max(1)) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_write_size_and_zstd_reads_them() {
        for n in [0, 1, 1000, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345] {
            let data = sample(n);
            let one = zst(&data, 1, 65536);
            for (threads, piece) in [(2, 65536), (3, 1000), (4, 1 << 20), (1, 777)] {
                assert_eq!(
                    zst(&data, threads, piece),
                    one,
                    "{n} bytes, {threads} threads, writes of {piece}"
                );
            }
            // the streaming decoder reads frame after frame
            let mut back = Vec::new();
            zstd::stream::read::Decoder::new(&one[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{n} bytes round trip");
            // one frame per started block, and always at least one
            let frames = n.div_ceil(BLOCK) + usize::from(n % BLOCK == 0);
            let magic = [0x28, 0xb5, 0x2f, 0xfd];
            let starts = one.windows(4).filter(|w| *w == magic).count();
            assert!(
                starts >= frames,
                "{n} bytes: {starts} frame magics, want {frames}"
            );
            assert_eq!(&one[..4], &magic);
        }
    }

    #[test]
    fn system_zstd_accepts_the_stream() {
        let data = sample(2 * BLOCK + 99);
        let z = zst(&data, 2, 65536);
        let mut child = std::process::Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("zstd runs (scripts/setup installs it)");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&z).unwrap());
        let mut back = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(
            child.wait().unwrap().success(),
            "zstd -d rejected the stream"
        );
        assert!(back == data, "zstd -d gave other bytes");
    }

    #[test]
    fn ratio_stays_close_to_one_frame() {
        let data = sample(4 * BLOCK);
        let par = zst(&data, 2, 65536);
        let one = zstd::bulk::compress(&data, LEVEL).unwrap();
        assert!(
            (par.len() as f64) < one.len() as f64 * 1.03 + 64.0,
            "{} vs {}",
            par.len(),
            one.len()
        );
    }
}
