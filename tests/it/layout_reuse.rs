//! `-o oci:DIR` rebuilt into the same folder: the earlier layout's blobs are taken over (hard
//! link after a size and stat check, or after hashing the old blob), and the weights are not
//! read — seen by the kernel (inotify), not only by mlimg's own count. (A folder that is not a
//! layout is refused: cache_integrity.rs.)

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::image::{noise_file, sha256_file};
use crate::common::*;

/// A scratch image with one uncompressed weights layer of `size` noise bytes.
fn weights_project(cx: &TestContext, size: u64) -> (PathBuf, PathBuf) {
    let project = cx.path().join("project");
    fs::create_dir_all(project.join("weights")).expect("mkdir");
    let weights = project.join("weights/model.safetensors");
    noise_file(&weights, 8, size);
    let spec = project.join("mlimg.toml");
    fs::write(
        &spec,
        "[image]\nbase = \"scratch\"\n\n[[weights]]\nname = \"m\"\nsource = \"weights\"\n\
         dest = \"/models/m\"\ncompression = \"none\"\n",
    )
    .expect("spec");
    (spec, weights)
}

/// Every blob of the layout hashes to its name; returns their names.
fn verify_layout(dir: &Path) -> Vec<String> {
    assert!(dir.join("oci-layout").is_file(), "{}", dir.display());
    assert!(dir.join("index.json").is_file(), "{}", dir.display());
    let mut names = Vec::new();
    for e in fs::read_dir(dir.join("blobs/sha256")).expect("blobs") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        assert_eq!(sha256_file(&p), format!("sha256:{name}"), "{}", p.display());
        names.push(name);
    }
    names.sort();
    names
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Watches one file with inotify (python3's ctypes: no unsafe code here) for opens and reads,
/// which no stat of the file causes and nothing can hide from the kernel.
const WATCH: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
IN_ACCESS, IN_OPEN = 0x1, 0x20
fd = libc.inotify_init1(os.O_NONBLOCK)
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_ACCESS | IN_OPEN) < 0:
    sys.exit("inotify: errno %d" % ctypes.get_errno())
print("ready", flush=True)
sys.stdin.read()
opens = reads = 0
while True:
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        break
    i = 0
    while i < len(data):
        _, mask, _, n = struct.unpack_from("iIII", data, i)
        opens += bool(mask & IN_OPEN)
        reads += bool(mask & IN_ACCESS)
        i += 16 + n
print(opens, reads)
"#;

struct Watch(Child);

impl Watch {
    fn start(file: &Path) -> Watch {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(WATCH)
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("ready");
        assert_eq!(line.trim(), "ready");
        Watch(child)
    }

    /// (opens, reads) of the file since `start` (consecutive equal events count once).
    fn stop(mut self) -> (u64, u64) {
        self.0.stdin.take().expect("stdin").flush().expect("eof");
        let out = self.0.wait_with_output().expect("watcher");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut n = text.split_whitespace().map(|x| x.parse().expect("count"));
        (n.next().expect("opens"), n.next().expect("reads"))
    }
}

#[test]
fn unchanged_rebuild_into_the_same_layout_reuses_its_blobs_without_reading_the_weights() {
    let cx = TestContext::new();
    let size = 3 << 20;
    let (spec, weights) = weights_project(&cx, size);
    let out = cx.path().join("layout");
    let target = format!("oci:{}", out.display());

    let w = Watch::start(&weights);
    let first = cx.build_json(&spec, &["-o", &target]);
    let (opens, reads) = w.stop();
    assert!(
        opens >= 1 && reads >= 1,
        "the watch sees the cold build read the weights"
    );
    assert!(!layer_cached(&first, "weights m"));
    assert_eq!(first["source_bytes_read"], size, "{first}");
    let layer = layer_digest(&first, "weights m");
    let blobs = verify_layout(&out);
    assert!(blobs.contains(&layer.trim_start_matches("sha256:").to_string()));
    let ino = fs::metadata(blob(&out, &layer)).expect("blob").ino();

    // 1. the stat recorded in the cache's outputs/ matches: the blob is hard-linked over
    let w = Watch::start(&weights);
    let second = cx.build_json(&spec, &["-o", &target]);
    assert_eq!(w.stop(), (0, 0), "the weights are neither opened nor read");
    assert_eq!(second["manifest_digest"], first["manifest_digest"]);
    assert!(layer_cached(&second, "weights m"));
    assert_eq!(layer_digest(&second, "weights m"), layer);
    assert_eq!(second["source_bytes_read"], 0, "{second}");
    assert_eq!(verify_layout(&out), blobs, "the same blobs, all intact");
    assert_eq!(
        fs::metadata(blob(&out, &layer)).expect("blob").ino(),
        ino,
        "the old layout's file is taken over, not copied"
    );

    // 2. without the stat record (e.g. another cache), the old blob is hashed, not the weights
    fs::remove_dir_all(cx.cache.join("outputs")).expect("rm outputs/");
    let w = Watch::start(&weights);
    let third = cx.build_json(&spec, &["-o", &target]);
    assert_eq!(w.stop(), (0, 0), "the weights are neither opened nor read");
    assert_eq!(third["manifest_digest"], first["manifest_digest"]);
    assert!(layer_cached(&third, "weights m"));
    assert_eq!(third["source_bytes_read"], 0, "{third}");
    assert_eq!(verify_layout(&out), blobs);
    assert_eq!(fs::metadata(blob(&out, &layer)).expect("blob").ino(), ino);

    // 3. an old blob whose bytes went bad (same size) is not taken over: the layer is
    // regenerated from the weights, read once, and the layout is right again
    let mut bad = fs::read(blob(&out, &layer)).expect("blob");
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    // a new file renamed over it: another inode, so the stat record cannot match
    let tmp = cx.path().join("bad-blob");
    fs::write(&tmp, &bad).expect("write");
    fs::rename(&tmp, blob(&out, &layer)).expect("corrupt the blob");
    let w = Watch::start(&weights);
    let fourth = cx.build_json(&spec, &["-o", &target]);
    let (opens, reads) = w.stop();
    assert!(opens >= 1 && reads >= 1, "regenerated from the weights");
    assert_eq!(fourth["manifest_digest"], first["manifest_digest"]);
    assert_eq!(fourth["source_bytes_read"], size, "read once: {fourth}");
    assert_eq!(verify_layout(&out), blobs, "the bad blob was replaced");
}
