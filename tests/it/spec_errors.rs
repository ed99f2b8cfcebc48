//! Bad input: each malformed spec exits 2 (never a panic) with an error naming the spec file,
//! the line and the field.

use std::fs;

use crate::common::TestContext;

struct Case {
    what: &'static str,
    spec: &'static str,
    line: usize,
    field: &'static str,
    says: &'static str,
}

const CASES: &[Case] = &[
    Case {
        what: "weights source outside the project",
        spec: "[image]\n\n[[weights]]\nname = \"w\"\nsource = \"..\"\ndest = \"/m\"\n",
        line: 5,
        field: "weights[0].source",
        says: "outside the project folder",
    },
    Case {
        what: "app src outside the project (absolute)",
        spec: "[image]\n[app]\nsrc = \"/\"\n",
        line: 3,
        field: "app.src",
        says: "resolves to /, outside the project folder",
    },
    Case {
        what: "context that is not a folder",
        spec: "[image]\ncontext = \"mlimg.toml\"\n",
        line: 2,
        field: "image.context",
        says: "is not a folder",
    },
    Case {
        what: "absurd python minor",
        spec: "[image]\n[python]\nversion = \"3.4000000\"\n",
        line: 3,
        field: "python.version",
        says: "outside the supported range",
    },
    Case {
        what: "absurd glibc minor",
        spec: "[image]\n[python]\nversion = \"3.11\"\nlibc = \"glibc 2.3000000\"\n",
        line: 4,
        field: "python.libc",
        says: "outside the supported range",
    },
    Case {
        what: "toml syntax",
        spec: "[image]\nname = \"a\nbase = \"scratch\"\n",
        line: 2,
        field: "",
        says: "",
    },
    Case {
        what: "unknown top-level table",
        spec: "[image]\n[bogus]\nx = 1\n",
        line: 2,
        field: "",
        says: "unknown field `bogus`",
    },
    Case {
        what: "unknown key",
        spec: "[image]\nbase = \"scratch\"\ntag = [\"x\"]\n",
        line: 3,
        field: "image.tag",
        says: "unknown field `tag`",
    },
    Case {
        what: "wrong type",
        spec: "[image]\ntags = \"latest\"\n",
        line: 2,
        field: "image.tags",
        says: "invalid type",
    },
    Case {
        what: "missing image table",
        spec: "[app]\nsrc = \"src\"\n",
        line: 1,
        field: "",
        says: "missing field `image`",
    },
    Case {
        what: "bad tag",
        spec: "[image]\ntags = [\"ok\", \"-bad\"]\n",
        line: 2,
        field: "image.tags[1]",
        says: "invalid tag",
    },
    Case {
        what: "bad platform",
        spec: "[image]\nplatforms = [\"linux\"]\n",
        line: 2,
        field: "image.platforms[0]",
        says: "not a platform",
    },
    Case {
        what: "base layout missing",
        spec: "[image]\nbase = \"oci:./nope:latest\"\n",
        line: 2,
        field: "image.base",
        says: "not an OCI image layout",
    },
    Case {
        what: "missing weights source",
        spec: "[image]\n\n[[weights]]\nname = \"w\"\nsource = \"./missing\"\ndest = \"/m\"\n",
        line: 5,
        field: "weights[0].source",
        says: "does not exist",
    },
    Case {
        what: "relative dest",
        spec: "[image]\n\n[[weights]]\nname = \"w\"\nsource = \"src\"\ndest = \"models/w\"\n",
        line: 6,
        field: "weights[0].dest",
        says: "not absolute",
    },
    Case {
        what: "escaping dest",
        spec: "[image]\n[app]\nsrc = \"src\"\ndest = \"/app/../../etc\"\n",
        line: 4,
        field: "app.dest",
        says: "\"..\"",
    },
    Case {
        what: "bad compression",
        spec: "[image]\n\n[[weights]]\nname = \"w\"\nsource = \"src\"\ndest = \"/m\"\ncompression = \"lz4\"\n",
        line: 7,
        field: "weights[0].compression",
        says: "unknown compression",
    },
    Case {
        what: "bad duration",
        spec: "[image]\n[config]\nhealthcheck = { test = [\"CMD\", \"true\"], interval = \"soon\" }\n",
        line: 3,
        field: "config.healthcheck.interval",
        says: "not a duration",
    },
    Case {
        what: "bad healthcheck test",
        spec: "[image]\n[config]\nhealthcheck = { test = [\"curl\"] }\n",
        line: 3,
        field: "config.healthcheck.test",
        says: "CMD",
    },
    Case {
        what: "bad port",
        spec: "[image]\n[config]\nports = [\"8000/tcp\", \"99999\"]\n",
        line: 3,
        field: "config.ports[1]",
        says: "not a port",
    },
    Case {
        what: "deps without a source",
        spec: "[image]\n\n[[deps]]\nname = \"d\"\n",
        line: 3,
        field: "deps[0]",
        says: "exactly one of",
    },
    Case {
        what: "deps dir without dest",
        spec: "[image]\n\n[[deps]]\nname = \"d\"\ndir = \"src\"\n",
        line: 3,
        field: "deps[0].dest",
        says: "needs `dest`",
    },
    Case {
        what: "duplicate weights name",
        spec: "[image]\n[[weights]]\nname = \"w\"\nsource = \"src\"\ndest = \"/a\"\n[[weights]]\nname = \"w\"\nsource = \"src\"\ndest = \"/b\"\n",
        line: 7,
        field: "weights[1].name",
        says: "already exists",
    },
    Case {
        what: "env refers to unknown weights",
        spec: "[image]\n[config]\nenv = { MODEL = \"${weights.nope.dest}\" }\n",
        line: 3,
        field: "config.env.MODEL",
        says: "no weights entry",
    },
    Case {
        what: "bad hub source",
        spec: "[image]\n[[weights]]\nname = \"w\"\nsource = \"hf://justone\"\ndest = \"/m\"\n",
        line: 4,
        field: "weights[0].source",
        says: "not a Hub repository",
    },
    Case {
        what: "negative retries",
        spec: "[image]\n[config]\nhealthcheck = { test = [\"CMD\", \"true\"], retries = -1 }\n",
        line: 3,
        field: "config.healthcheck.retries",
        says: "not a count",
    },
    Case {
        what: "bad stop signal",
        spec: "[image]\n[config]\nstop_signal = \"TERM\"\n",
        line: 3,
        field: "config.stop_signal",
        says: "not a signal",
    },
    Case {
        what: "bad layering",
        spec: "[image]\n[[weights]]\nname = \"w\"\nsource = \"src\"\ndest = \"/m\"\nlayers = \"many\"\n",
        line: 6,
        field: "weights[0].layers",
        says: "unknown layering",
    },
];

#[test]
fn malformed_specs_fail_with_file_line_and_field() {
    assert!(CASES.len() >= 15);
    let cx = TestContext::new();
    fs::create_dir_all(cx.path().join("src")).expect("mkdir");
    let spec = cx.path().join("mlimg.toml");
    let mut failures = Vec::new();
    for c in CASES {
        fs::write(&spec, c.spec).expect("write spec");
        let out = cx
            .mlimg()
            .arg("build")
            .arg("-f")
            .arg(&spec)
            .arg("--dry-run")
            .output()
            .expect("run mlimg");
        let err = String::from_utf8_lossy(&out.stderr);
        let want_pos = format!("{}:{}:", spec.display(), c.line);
        let ok = out.status.code() == Some(2)
            && !err.contains("panicked")
            && err.contains(&want_pos)
            && (c.field.is_empty() || err.contains(&format!(": {}: ", c.field)))
            && err.contains(c.says);
        if !ok {
            failures.push(format!(
                "{} (want {want_pos} field {:?} saying {:?}; exit {:?}):\n{err}",
                c.what,
                c.field,
                c.says,
                out.status.code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn a_missing_spec_file_says_how_to_name_one() {
    let cx = TestContext::new();
    let out = cx
        .mlimg()
        .current_dir(cx.path())
        .arg("build")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "a spec error exits 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mlimg.toml") && err.contains("-f FILE"),
        "{err}"
    );
}
