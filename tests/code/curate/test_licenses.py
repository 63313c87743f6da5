"""Licenses as The Stack v2 has them: license-file names, unknown != absent, SPDX precedence,
every detected license must be permissive, per-file SPDX headers, a pluggable detector."""

from __future__ import annotations

import importlib.util

import pytest

from domainfm.code.curate import licenses
from domainfm.code.curate.filters import LicenseFilter

MIT = ("MIT License\n\nCopyright (c) 2020 Jane Doe\n\nPermission is hereby granted, free of charge, to any person "
       "obtaining a copy\nof this software and associated documentation files (the \"Software\"), to deal\n")
GPL3 = ("                    GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007\n\n"
        " Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>\n")


# go-license-detector's names (The Stack) are license files; source files named like one are not
@pytest.mark.parametrize("path,expected", [
    ("LICENSE", True), ("LICENSE.txt", True), ("LICENCE.md", True), ("COPYING", True), ("COPYING.LESSER", True),
    ("NOTICE", True), ("UNLICENSE", True), ("LICENSE-MIT", True), ("LICENSE.APACHE2", True), ("docs/LICENSE.rst", True),
    ("gpl-3.0.txt", True), ("license.py", False), ("License.java", False), ("lib/license.js", False),
    ("src/licenses.ts", False), ("licensing.py", False), ("license.json", False),
])
def test_license_file_names(path, expected):
    assert licenses.is_license_file(path) is expected


def test_source_file_named_license_does_not_poison_its_directory():
    lm = licenses.LicenseMap()
    lm.add_file("LICENSE", MIT)
    lm.add_file("pkg/license.py", "def check_license(key):\n    return key in VALID\n")
    lm.add_file("web/lib/license.js", "export function license() { return 'ok'; }\n")
    look = lm.lookup_fn()
    assert look("pkg/core.py") == ["MIT"] and look("web/lib/app.js") == ["MIT"]
    assert licenses.is_license_candidate("pkg/license.py") is False


@pytest.mark.parametrize("classifier", [
    "GNU General Public License v3 or later (GPLv3+)", "GNU Affero General Public License v3 or later (AGPLv3+)",
    "GNU Lesser General Public License v3 or later (LGPLv3+)", "Mozilla Public License 1.1 (MPL 1.1)",
    "European Union Public Licence 1.2 (EUPL 1.2)", "Other/Proprietary License", "Freely Distributable",
])
def test_unrecognised_or_copyleft_classifiers_are_not_permissive(classifier):
    meta = f"Metadata-Version: 2.1\nName: pkg\nClassifier: License :: OSI Approved :: {classifier}\n\nbody\n"
    lm = licenses.LicenseMap()
    lm.add_file("pkg-1.0.dist-info/METADATA", meta)
    found = lm.lookup_fn()("pkg/__init__.py")
    assert found and licenses.license_type(found) == "non_permissive", found


@pytest.mark.parametrize("value,ltype", [
    ("GNU GPL v3", "non_permissive"), ("GPLv2+", "non_permissive"), ("AGPLv3+", "non_permissive"),
    ("LGPLv3+", "non_permissive"), ("MPL 1.1", "non_permissive"), ("EUPL 1.2", "non_permissive"),
    ("Dual License", "non_permissive"), ("Copyright 2019 ACME Corp.", "non_permissive"),
    ("MIT", "permissive"), ("BSD 3-Clause", "permissive"), ("Apache 2.0", "permissive"),
    ("MIT or GPL-2.0", "permissive"),  # a choice: the permissive alternative may be taken
    ("UNKNOWN", "no_license"), ("see LICENSE", "no_license"),
])
def test_free_text_license_field(value, ltype):
    meta = f"Metadata-Version: 2.1\nName: pkg\nLicense: {value}\n\nbody\n"
    lm = licenses.LicenseMap()
    lm.add_file("PKG-INFO", meta)
    assert licenses.license_type(lm.lookup_fn()("pkg/a.py")) == ltype


@pytest.mark.parametrize("expr,ltype", [
    ("(MIT OR GPL-2.0) AND LGPL-3.0", "non_permissive"),  # AND binds the LGPL whatever is chosen
    ("MIT OR GPL-2.0 AND LGPL-3.0", "permissive"),  # = MIT OR (GPL-2.0 AND LGPL-3.0)
    ("Apache-2.0 WITH LLVM-exception", "permissive"), ("GPL-2.0+", "non_permissive"),
    ("BSD-3-Clause AND (Apache-2.0 OR MIT)", "permissive"), ("MIT AND LicenseRef-Proprietary", "non_permissive"),
])
def test_spdx_expression_precedence(expr, ltype):
    assert licenses.license_type(licenses.parse_declaration(expr)) == ltype


def test_metadata_does_not_override_license_text():
    lm = licenses.LicenseMap()
    lm.add_file("package.json", '{"name": "x", "version": "1.0.0", "license": "MIT"}')
    lm.add_file("LICENSE", GPL3)
    found = lm.lookup_fn()("index.js")
    assert found == ["GPL-3.0", "MIT"] and licenses.license_type(found) == "non_permissive"
    npm = licenses.LicenseMap()
    npm.add_file("package.json", '{"name": "x", "license": "UNLICENSED"}')  # npm: proprietary
    assert licenses.license_type(npm.lookup_fn()("index.js")) == "non_permissive"


def test_unreadable_license_text_is_unknown_but_notice_is_not():
    lm = licenses.LicenseMap()
    lm.add_file("LICENSE", "Copyright (c) 2021 ACME Corp.\n\nUse of this software requires a written agreement.\n")
    assert lm.lookup_fn()("a.py") == [licenses.UNKNOWN]
    lm.add_file("sub/LICENSE", "Proprietary. All rights reserved.\n")  # a few words: read as a name
    assert lm.lookup_fn()("sub/a.py") == [licenses.PROPRIETARY, licenses.UNKNOWN]
    notice = licenses.LicenseMap()
    notice.add_file("NOTICE", "This product includes software developed at The Apache Software Foundation.")
    notice.add_file("LICENSE", MIT)
    assert notice.lookup_fn()("a.py") == ["MIT"]


def test_spdx_header_counts_per_file():
    flt = LicenseFilter()
    c_file = "// SPDX-License-Identifier: GPL-2.0-only\n#include <linux/module.h>\nint x;\n"
    rec = {"repo_name": "a/b", "path": "drivers/x.c", "content": c_file, "licenses": ["MIT"],
           "license_type": "permissive"}
    assert flt.filter(rec) == (False, "non_permissive") and rec["licenses"] == ["GPL-2.0-only", "MIT"]
    py = "# SPDX-License-Identifier: Apache-2.0 OR MIT\nimport os\n"
    rec2 = {"repo_name": "a/b", "path": "x.py", "content": py, "licenses": [], "license_type": "no_license"}
    assert flt.filter(rec2) is True and rec2["license_type"] == "permissive"
    css = "/* SPDX-License-Identifier: MIT */\nbody { margin: 0 }\n"
    assert licenses.spdx_headers(css) == {"MIT"}


def test_detector_registry_and_fake_detector():
    assert "rules" in licenses.DETECTORS.names()
    seen = []

    def fake(text: str) -> set[str]:  # any callable text -> SPDX ids plugs in (ScanCode does)
        seen.append(text)
        return {"BSD-2-Clause"}

    lm = licenses.LicenseMap(detector=fake)
    lm.add_file("COPYING", "whatever the text")
    assert lm.lookup_fn()("x.c") == ["BSD-2-Clause"] and seen == ["whatever the text"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("licensedcode") is None,
                    reason="scancode-toolkit not installed (optional extra domainfm[licenses])")
def test_scancode_detector_on_real_texts():
    detect = licenses.get_detector("scancode")
    assert "MIT" in detect(MIT) and any(k.startswith("GPL-3.0") for k in detect(GPL3))


def test_real_license_file_shapes_from_site_packages():
    """Shapes seen in this venv's packages (triton, resolvelib, numpy's splitmix64, ray, packaging)."""
    mit_in_comment = ("/*\n * Copyright 2018-2020 Philippe Tillet\n *\n * Permission is hereby granted, free of charge, "
                      "to any person obtaining\n * a copy of this software and associated documentation files\n */\n")
    isc_original = ("Copyright (c) 2018, Tzu-ping Chung <uranusjr@gmail.com>\n\nPermission to use, copy, modify, and "
                    "distribute this software for any\npurpose with or without fee is hereby granted, provided that the "
                    "above\ncopyright notice and this permission notice appear in all copies.\n")
    cc0_notice = ("To the extent possible under law, the author has dedicated all copyright\nand related and neighboring "
                  "rights to this software to the public domain\nworldwide. This software is distributed without any "
                  "warranty.\n")
    assert licenses.detect_text(mit_in_comment) == {"MIT"}
    assert licenses.detect_text(isc_original) == {"ISC"}
    assert licenses.detect_text(cc0_notice) == {"CC0-1.0"}
    lm = licenses.LicenseMap()
    lm.add_file("ray-2.60.0.dist-info/licenses/LICENSE.txt", "Apache 2.0\n")  # just a name
    lm.add_file("packaging/LICENSE", "This software is made available under the terms of *either* of the licenses "
                                     "found in LICENSE.APACHE or LICENSE.BSD. Contributions to this software is made "
                                     "under the terms of *both* these licenses.\n")  # a pointer: the others count
    lm.add_file("packaging/LICENSE.BSD", "Redistribution and use in source and binary forms, with or without "
                                         "modification... Neither the name of the copyright holder")
    look = lm.lookup_fn()
    assert look("ray/__init__.py") == ["Apache-2.0"]
    assert look("packaging/version.py") == ["Apache-2.0", "BSD-3-Clause"]


def test_detector_own_permissive_refs_count_as_permissive():
    # ScanCode's one-off permissive licenses (protobuf's) come back as LicenseRef-permissive-scancode-*
    assert licenses.license_type(["LicenseRef-permissive-scancode-protobuf", "MIT"]) == "permissive"
    assert licenses.license_type(["LicenseRef-scancode-unknown", "MIT"]) == "non_permissive"
