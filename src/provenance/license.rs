//! A wheel's license as an SPDX expression, from its METADATA fields — only where the mapping
//! is not a guess: `License-Expression` (PEP 639, SPDX by definition), else a short `License`
//! that is an SPDX id (or a common spelling of one), else the single `License :: OSI Approved
//! :: …` classifier that names one license and version. Anything else (`BSD License`, `Apache
//! Software License`, several classifiers) is `None`: the SBOM says NOASSERTION.

use crate::sources::python::install::LicenseMetadata;

/// The SPDX ids a `License` field may spell them as, and the classifiers that name exactly one.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "MIT",
        &[
            "mit",
            "mit license",
            "License :: OSI Approved :: MIT License",
        ],
    ),
    (
        "MIT-0",
        &[
            "mit-0",
            "License :: OSI Approved :: MIT No Attribution License (MIT-0)",
        ],
    ),
    (
        "Apache-2.0",
        &[
            "apache-2.0",
            "apache 2.0",
            "apache license 2.0",
            "apache license, version 2.0",
            "apache 2",
            "apache-2",
        ],
    ),
    ("BSD-2-Clause", &["bsd-2-clause", "bsd 2-clause"]),
    (
        "BSD-3-Clause",
        &[
            "bsd-3-clause",
            "bsd 3-clause",
            "new bsd",
            "new bsd license",
            "3-clause bsd",
        ],
    ),
    (
        "ISC",
        &[
            "isc",
            "isc license",
            "License :: OSI Approved :: ISC License (ISCL)",
        ],
    ),
    (
        "PSF-2.0",
        &[
            "psf-2.0",
            "psf",
            "License :: OSI Approved :: Python Software Foundation License",
        ],
    ),
    (
        "MPL-2.0",
        &[
            "mpl-2.0",
            "mpl 2.0",
            "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)",
        ],
    ),
    (
        "Unlicense",
        &[
            "unlicense",
            "the unlicense",
            "License :: OSI Approved :: The Unlicense (Unlicense)",
        ],
    ),
    (
        "BSL-1.0",
        &[
            "bsl-1.0",
            "License :: OSI Approved :: Boost Software License 1.0 (BSL-1.0)",
        ],
    ),
    (
        "EPL-2.0",
        &[
            "epl-2.0",
            "License :: OSI Approved :: Eclipse Public License 2.0 (EPL-2.0)",
        ],
    ),
    (
        "Zlib",
        &["zlib", "License :: OSI Approved :: zlib/libpng License"],
    ),
    ("0BSD", &["0bsd"]),
    (
        "CC0-1.0",
        &[
            "cc0-1.0",
            "cc0",
            "License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication",
        ],
    ),
    ("GPL-2.0-only", &["gpl-2.0-only"]),
    ("GPL-2.0-or-later", &["gpl-2.0-or-later"]),
    ("GPL-3.0-only", &["gpl-3.0-only"]),
    ("GPL-3.0-or-later", &["gpl-3.0-or-later"]),
    ("LGPL-2.1-only", &["lgpl-2.1-only"]),
    ("LGPL-2.1-or-later", &["lgpl-2.1-or-later"]),
    ("LGPL-3.0-only", &["lgpl-3.0-only"]),
    ("LGPL-3.0-or-later", &["lgpl-3.0-or-later"]),
];

/// The longest `License` field taken as an identifier.
const SHORT: usize = 40;

/// The SPDX license expression of a wheel, when its metadata states one unambiguously.
pub fn spdx_expression(m: &LicenseMetadata) -> Option<String> {
    if let Some(e) = m.expression.as_deref().filter(|e| is_expression(e)) {
        return Some(e.to_string());
    }
    if let Some(l) = m.license.as_deref().filter(|l| l.len() <= SHORT) {
        let key = l.trim().to_ascii_lowercase();
        if let Some((id, _)) = KNOWN
            .iter()
            .find(|(id, names)| id.eq_ignore_ascii_case(&key) || names.iter().any(|n| *n == key))
        {
            return Some(id.to_string());
        }
    }
    let mut ids = m.classifiers.iter().map(|c| {
        KNOWN
            .iter()
            .find(|(_, names)| names.contains(&c.as_str()))
            .map(|(id, _)| *id)
    });
    match (ids.next(), ids.next()) {
        (Some(Some(id)), None) => Some(id.to_string()),
        _ => None,
    }
}

/// Whether `e` looks like an SPDX license expression (ids, `AND`/`OR`/`WITH`, parentheses,
/// `LicenseRef-…`): anything else would make the SBOM invalid.
fn is_expression(e: &str) -> bool {
    let tokens = e
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| !t.is_empty());
    let mut any = false;
    for t in tokens {
        any = true;
        let ok = t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ':'));
        if !ok {
            return false;
        }
    }
    any && e.len() <= 200
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(expression: Option<&str>, license: Option<&str>, classifiers: &[&str]) -> LicenseMetadata {
        LicenseMetadata {
            expression: expression.map(str::to_string),
            license: license.map(str::to_string),
            classifiers: classifiers.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn only_unambiguous_licenses_map() {
        let bsd = "License :: OSI Approved :: BSD License";
        let mit = "License :: OSI Approved :: MIT License";
        let asl = "License :: OSI Approved :: Apache Software License";
        assert_eq!(
            spdx_expression(&m(Some("MIT OR Apache-2.0"), Some("x"), &[])).as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            spdx_expression(&m(None, Some("BSD-3-Clause"), &[bsd])).as_deref(),
            Some("BSD-3-Clause")
        );
        assert_eq!(
            spdx_expression(&m(None, Some("MIT"), &[mit])).as_deref(),
            Some("MIT")
        );
        assert_eq!(
            spdx_expression(&m(None, None, &[mit])).as_deref(),
            Some("MIT")
        );
        assert_eq!(spdx_expression(&m(None, None, &[bsd])), None);
        assert_eq!(spdx_expression(&m(None, None, &[asl, bsd])), None);
        assert_eq!(spdx_expression(&m(None, None, &[mit, bsd])), None);
        assert_eq!(spdx_expression(&m(None, Some("BSD"), &[])), None);
        assert_eq!(
            spdx_expression(&m(
                None,
                Some("Copyright (c) 2024 ACME, all rights reserved"),
                &[]
            )),
            None
        );
        assert_eq!(
            spdx_expression(&m(Some("see LICENSE, please"), None, &[])),
            None
        );
    }
}
