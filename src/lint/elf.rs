//! The dynamic section of an ELF shared object: the libraries it needs (`DT_NEEDED`) and where
//! it asks the loader to look for them (`DT_RPATH`, `DT_RUNPATH`), read from a stream.
//!
//! A wheel's `.so` is a deflated zip member (no seeking) that can be hundreds of MB, so the
//! whole file is never loaded. The structures are parsed with the `object` crate's ELF types
//! (header, program headers, `Dyn` entries); what this module adds is fetching only the byte
//! ranges they describe, in file order: the first 64 KiB (header and program headers), the
//! `PT_DYNAMIC` segment, then the few strings of `.dynstr` that the entries point at. Bytes in
//! between are decompressed and dropped; when the strings lie before the dynamic segment (the
//! usual layout) the member is opened a second time. Memory stays within fixed caps.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};

use object::elf::{
    DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ, DT_STRTAB, PT_DYNAMIC, PT_LOAD,
};
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _};
use object::{Endianness, elf};

/// Bytes read first: the ELF header and the program headers must lie within.
const HEAD: u64 = 64 << 10;
/// Most bytes of a `PT_DYNAMIC` segment read (real ones hold a few hundred entries).
const MAX_DYNAMIC: u64 = 1 << 20;
/// Most bytes of one string (a library name or a search path list).
const MAX_STRING: u64 = 4096;
/// Most string entries kept from one dynamic section.
const MAX_STRINGS: usize = 1024;

/// What one shared object asks of the dynamic loader.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dynamic {
    /// `DT_NEEDED`: library names (sonames), in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` directories (ignored by the loader when `DT_RUNPATH` is set).
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` directories.
    pub runpath: Vec<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
}

impl Dynamic {
    /// The directories the loader searches first for this object's own `DT_NEEDED`, as
    /// written (`$ORIGIN` unexpanded): `DT_RUNPATH`, else `DT_RPATH`.
    pub fn search(&self) -> &[String] {
        if self.runpath.is_empty() {
            &self.rpath
        } else {
            &self.runpath
        }
    }
}

/// Something that can be read from its start, more than once (a zip member, a file).
pub trait Source {
    fn open(&mut self) -> io::Result<Box<dyn Read + '_>>;
}

fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A forward-only reader that knows its offset.
struct Forward<R> {
    r: BufReader<R>,
    pos: u64,
}

impl<R: Read> Forward<R> {
    fn new(r: R) -> Self {
        Forward {
            r: BufReader::with_capacity(64 << 10, r),
            pos: 0,
        }
    }

    fn skip_to(&mut self, off: u64) -> io::Result<()> {
        if off < self.pos {
            return Err(bad("internal: backwards skip"));
        }
        let n = io::copy(&mut (&mut self.r).take(off - self.pos), &mut io::sink())?;
        self.pos += n;
        if self.pos < off {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn read_up_to(&mut self, len: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = (&mut self.r).take(len).read_to_end(&mut buf)?;
        self.pos += n as u64;
        Ok(buf)
    }

    fn read_exact(&mut self, len: u64) -> io::Result<Vec<u8>> {
        let buf = self.read_up_to(len)?;
        if (buf.len() as u64) < len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(buf)
    }

    /// A NUL-terminated string at the current offset (without the NUL), at most `MAX_STRING`.
    fn read_cstr(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = (&mut self.r).take(MAX_STRING).read_until(0, &mut buf)?;
        self.pos += n as u64;
        if buf.last() == Some(&0) {
            buf.pop();
        }
        Ok(buf)
    }
}

/// Reads the dynamic section of the ELF file `src` holds. `Ok(None)`: not an ELF file, or one
/// without a dynamic segment (nothing to load).
pub fn read_dynamic(src: &mut dyn Source) -> io::Result<Option<Dynamic>> {
    let mut first = Forward::new(src.open()?);
    let head = first.read_up_to(HEAD)?;
    // e_ident: the magic, then the class at byte 4
    if head.len() < 16 || head[..4] != elf::ELFMAG {
        return Ok(None);
    }
    let step = match elf::FileClass(head[4]) {
        elf::ELFCLASS64 => entries::<elf::FileHeader64<Endianness>>(&head, &mut first)?,
        elf::ELFCLASS32 => entries::<elf::FileHeader32<Endianness>>(&head, &mut first)?,
        c => return Err(bad(format!("unknown ELF class {}", c.0))),
    };
    let Some(mut entries) = step else {
        return Ok(None);
    };
    let strings = match entries.offsets.first() {
        None => BTreeMap::new(),
        Some(&lowest) if entries.str_off + lowest >= first.pos => {
            read_strings(&mut first, entries.str_off, &entries.offsets)?
        }
        // the strings lie behind: from the first bytes, or from a second pass
        Some(_) if entries.str_off + entries.str_size <= head.len() as u64 => {
            from_head(&head, entries.str_off, &entries.offsets)
        }
        Some(_) => {
            drop(first);
            let mut again = Forward::new(src.open()?);
            read_strings(&mut again, entries.str_off, &entries.offsets)?
        }
    };
    let mut out = Dynamic::default();
    for (kind, o) in std::mem::take(&mut entries.wanted) {
        let Some(s) = strings.get(&o) else {
            return Err(bad(format!("dynamic string offset {o} out of range")));
        };
        let dirs = || s.split(':').filter(|d| !d.is_empty()).map(str::to_string);
        match kind {
            Kind::Needed => out.needed.push(s.clone()),
            Kind::Rpath => out.rpath.extend(dirs()),
            Kind::Runpath => out.runpath.extend(dirs()),
            Kind::Soname => out.soname = Some(s.clone()),
        }
    }
    Ok(Some(out))
}

/// A string-valued dynamic entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Needed,
    Rpath,
    Runpath,
    Soname,
}

/// The string entries of a dynamic section and where their strings are.
struct Entries {
    wanted: Vec<(Kind, u64)>,
    /// File offset and size of the string table.
    str_off: u64,
    str_size: u64,
    /// The distinct string offsets to read, sorted.
    offsets: Vec<u64>,
}

/// Parses the header and program headers in `head` and reads the dynamic segment from
/// `first` (positioned after `head`). `None`: no dynamic segment.
fn entries<Elf: FileHeader<Endian = Endianness>>(
    head: &[u8],
    first: &mut Forward<Box<dyn Read + '_>>,
) -> io::Result<Option<Entries>> {
    let header = Elf::parse(head).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let phdrs = header.program_headers(endian, head).map_err(|e| {
        bad(format!(
            "{e} (program headers must lie in the first 64 KiB)"
        ))
    })?;
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type(endian) == PT_DYNAMIC) else {
        return Ok(None);
    };
    let (dyn_off, dyn_size) = dynamic.file_range(endian);
    let dyn_size = dyn_size.min(MAX_DYNAMIC);
    let bytes = match dyn_off.checked_add(dyn_size) {
        Some(end) if end <= head.len() as u64 => head[dyn_off as usize..end as usize].to_vec(),
        _ => {
            first.skip_to(dyn_off)?;
            first.read_exact(dyn_size)?
        }
    };
    let count = bytes.len() / std::mem::size_of::<Elf::Dyn>();
    let (dyns, _) =
        object::pod::slice_from_bytes::<Elf::Dyn>(&bytes, count).map_err(|()| bad("dynamic"))?;
    let mut wanted: Vec<(Kind, u64)> = Vec::new();
    let (mut strtab, mut strsz) = (None, None);
    for d in dyns {
        let kind = match d.tag(endian) {
            DT_NULL => break,
            DT_STRTAB => {
                strtab = Some(d.val(endian));
                continue;
            }
            DT_STRSZ => {
                strsz = Some(d.val(endian));
                continue;
            }
            DT_NEEDED => Kind::Needed,
            DT_RPATH => Kind::Rpath,
            DT_RUNPATH => Kind::Runpath,
            DT_SONAME => Kind::Soname,
            _ => continue,
        };
        if wanted.len() < MAX_STRINGS {
            wanted.push((kind, d.val(endian)));
        }
    }
    if wanted.is_empty() {
        return Ok(Some(Entries {
            wanted,
            str_off: 0,
            str_size: 0,
            offsets: Vec::new(),
        }));
    }
    let (Some(strtab), Some(str_size)) = (strtab, strsz) else {
        return Err(bad("dynamic section without DT_STRTAB or DT_STRSZ"));
    };
    // DT_STRTAB is an address: the loadable segment that holds it gives its file offset
    let str_off = phdrs
        .iter()
        .filter(|p| p.p_type(endian) == PT_LOAD)
        .find_map(|p| {
            let (vaddr, size): (u64, u64) = (p.p_vaddr(endian).into(), p.p_filesz(endian).into());
            (strtab >= vaddr && strtab - vaddr < size)
                .then(|| p.p_offset(endian).into() + (strtab - vaddr))
        })
        .ok_or_else(|| bad("DT_STRTAB lies in no loadable segment"))?;
    let mut offsets: Vec<u64> = wanted
        .iter()
        .map(|(_, o)| *o)
        .filter(|o| *o < str_size)
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    Ok(Some(Entries {
        wanted,
        str_off,
        str_size,
        offsets,
    }))
}

/// The strings at `offsets` (sorted) of the string table at `base`, read forward. Two offsets
/// can point into one string (a suffix shared by the linker): the later one is cut from the
/// string read before.
fn read_strings<R: Read>(
    r: &mut Forward<R>,
    base: u64,
    offsets: &[u64],
) -> io::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    let mut last: Option<(u64, Vec<u8>)> = None;
    for &o in offsets {
        let at = base + o;
        let s = match &last {
            Some((start, s)) if at < r.pos => {
                let from = usize::try_from(at - start).unwrap_or(usize::MAX);
                s.get(from..).map(<[u8]>::to_vec).unwrap_or_default()
            }
            _ => {
                r.skip_to(at)?;
                let s = r.read_cstr()?;
                last = Some((at, s.clone()));
                s
            }
        };
        out.insert(o, String::from_utf8_lossy(&s).into_owned());
    }
    Ok(out)
}

fn from_head(head: &[u8], base: u64, offsets: &[u64]) -> BTreeMap<u64, String> {
    offsets
        .iter()
        .map(|&o| {
            let start = (base + o) as usize;
            let rest = head.get(start..).unwrap_or_default();
            let end = rest
                .iter()
                .take(MAX_STRING as usize)
                .position(|&b| b == 0)
                .unwrap_or(rest.len().min(MAX_STRING as usize));
            (o, String::from_utf8_lossy(&rest[..end]).into_owned())
        })
        .collect()
}

/// A file on disk as a [`Source`].
pub struct FileSource<'a>(pub &'a std::path::Path);

impl Source for FileSource<'_> {
    fn open(&mut self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(std::fs::File::open(self.0)?))
    }
}

/// A member of an open zip archive as a [`Source`].
pub struct ZipSource<'a, R: Read + io::Seek> {
    pub archive: &'a mut zip::ZipArchive<R>,
    pub name: &'a str,
}

impl<R: Read + io::Seek> Source for ZipSource<'_, R> {
    fn open(&mut self) -> io::Result<Box<dyn Read + '_>> {
        let f = self
            .archive
            .by_name(self.name)
            .map_err(|e| bad(format!("{}: {e}", self.name)))?;
        Ok(Box::new(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that counts how often it was opened and how many bytes were read.
    struct Counted {
        data: Vec<u8>,
        opens: usize,
    }

    impl Source for Counted {
        fn open(&mut self) -> io::Result<Box<dyn Read + '_>> {
            self.opens += 1;
            Ok(Box::new(&self.data[..]))
        }
    }

    #[test]
    fn not_elf_is_none() {
        let mut s = Counted {
            data: b"INPUT(libfoo.so.1)\n".to_vec(),
            opens: 0,
        };
        assert_eq!(read_dynamic(&mut s).unwrap(), None);
        let mut s = Counted {
            data: Vec::new(),
            opens: 0,
        };
        assert_eq!(read_dynamic(&mut s).unwrap(), None);
    }

    #[test]
    fn truncated_elf_is_an_error() {
        let mut data = b"\x7fELF\x02\x01\x01".to_vec();
        data.resize(40, 0);
        let mut s = Counted { data, opens: 0 };
        assert!(read_dynamic(&mut s).is_err());
    }

    #[test]
    fn strings_sharing_a_suffix() {
        let table = b"\0libfoo.so.1\0bar\0";
        let mut r = Forward::new(&table[..]);
        // offset 4 points into "libfoo.so.1": "foo.so.1"
        let got = read_strings(&mut r, 0, &[1, 4, 13]).unwrap();
        assert_eq!(got[&1], "libfoo.so.1");
        assert_eq!(got[&4], "foo.so.1");
        assert_eq!(got[&13], "bar");
        assert_eq!(
            from_head(table, 0, &[4]).get(&4).map(String::as_str),
            Some("foo.so.1")
        );
    }

    /// This test binary's own dependencies, read as the loader sees them (the test runs on
    /// Linux, where it is a dynamically linked ELF executable needing libc).
    #[test]
    fn reads_a_real_elf_file() {
        let exe = std::env::current_exe().unwrap();
        let d = read_dynamic(&mut FileSource(&exe))
            .unwrap()
            .expect("dynamic");
        assert!(d.needed.iter().any(|n| n.starts_with("libc.so")), "{d:?}");
    }

    /// Compiles `code` into a shared object with `gcc` and the extra link arguments.
    fn gcc_so(dir: &std::path::Path, name: &str, code: &str, args: &[&str]) -> Vec<u8> {
        let c = dir.join(format!("{name}.c"));
        std::fs::write(&c, code).unwrap();
        let out = dir.join(name);
        let st = std::process::Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(&c)
            .args(args)
            .status()
            .expect("gcc");
        assert!(st.success());
        std::fs::read(out).unwrap()
    }

    fn deflated_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write;
        let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (n, b) in members {
            zw.start_file(*n, opts).unwrap();
            zw.write_all(b).unwrap();
        }
        zw.finish().unwrap().into_inner()
    }

    /// Real shared objects from gcc, streamed from deflated zip members: the needed names and
    /// the run path come out; an object whose dynamic segment lies 8 MiB in (after a big
    /// constant) is read in two passes, and never held whole.
    #[test]
    fn reads_gcc_shared_objects_from_a_zip() {
        let d = tempfile::tempdir().unwrap();
        let small = gcc_so(
            d.path(),
            "lib_small.so",
            "int f(void) { return 1; }\n",
            &[
                "-Wl,--no-as-needed",
                "-lgomp",
                "-lm",
                "-Wl,-rpath,$ORIGIN/../pkg.libs",
                "-Wl,--enable-new-dtags",
            ],
        );
        let big = gcc_so(
            d.path(),
            "lib_big.so",
            "const char big[8 << 20] = {1};\nint g(void) { return big[5]; }\n",
            &["-Wl,--no-as-needed", "-lgomp", "-Wl,-soname,libbig.so.1"],
        );
        assert!(big.len() > 8 << 20);
        let zip = deflated_zip(&[("pkg/lib_small.so", &small), ("pkg/lib_big.so", &big)]);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();

        let mut src = ZipSource {
            archive: &mut archive,
            name: "pkg/lib_small.so",
        };
        let dy = read_dynamic(&mut src).unwrap().expect("dynamic");
        assert!(dy.needed.contains(&"libgomp.so.1".to_string()), "{dy:?}");
        assert!(dy.needed.contains(&"libm.so.6".to_string()), "{dy:?}");
        assert_eq!(dy.runpath, ["$ORIGIN/../pkg.libs"]);
        assert!(dy.rpath.is_empty());
        assert_eq!(dy.search(), ["$ORIGIN/../pkg.libs"]);

        /// Counts the opens of a zip member.
        struct Counting<'a, R: Read + io::Seek> {
            inner: ZipSource<'a, R>,
            opens: usize,
        }
        impl<R: Read + io::Seek> Source for Counting<'_, R> {
            fn open(&mut self) -> io::Result<Box<dyn Read + '_>> {
                self.opens += 1;
                self.inner.open()
            }
        }
        let mut src = Counting {
            inner: ZipSource {
                archive: &mut archive,
                name: "pkg/lib_big.so",
            },
            opens: 0,
        };
        let dy = read_dynamic(&mut src).unwrap().expect("dynamic");
        assert_eq!(dy.needed.iter().filter(|n| *n == "libgomp.so.1").count(), 1);
        assert_eq!(dy.soname.as_deref(), Some("libbig.so.1"));
        assert!(dy.runpath.is_empty() && dy.rpath.is_empty());
        assert_eq!(
            src.opens, 1,
            "the strings lie in the first 64 KiB: one pass"
        );

        // 4000 exported functions push .dynstr past the first 64 KiB: a second pass
        let mut code = String::from("const char big[8 << 20] = {1};\n");
        for i in 0..4000 {
            code.push_str(&format!(
                "int exported_function_with_a_long_name_{i:05}(void) {{ return {i}; }}\n"
            ));
        }
        let many = gcc_so(
            d.path(),
            "lib_many.so",
            &code,
            &["-Wl,--no-as-needed", "-lgomp", "-Wl,-rpath,/opt/x/lib"],
        );
        let zip = deflated_zip(&[("pkg/lib_many.so", &many)]);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        let mut src = Counting {
            inner: ZipSource {
                archive: &mut archive,
                name: "pkg/lib_many.so",
            },
            opens: 0,
        };
        let dy = read_dynamic(&mut src).unwrap().expect("dynamic");
        assert!(dy.needed.contains(&"libgomp.so.1".to_string()), "{dy:?}");
        assert_eq!(dy.search(), ["/opt/x/lib"]);
        assert_eq!(
            src.opens, 2,
            "strings behind the dynamic segment: a second pass"
        );
    }
}
