"""Code Shield flags insecure snippets in each language with rule, CWE, severity and line, passes clean ones,
and agrees with Meta's codeshield package where both run."""

import asyncio

import pytest

from herd.errors import HerdError
from herd.safety.codeshield import language_of, scan, scan_file

INSECURE = [  # (language, code, expected CWE, line)
    ("python", "import hashlib\n\nh = hashlib.md5(b'x')\n", "CWE-328", 3),
    ("python", "import subprocess\nsubprocess.run(cmd, shell=True)\n", "CWE-78", 2),
    ("python", "import yaml\nconfig = yaml.load(open('c.yml'))\n", "CWE-502", 2),
    ("c", "#include <stdio.h>\nint main(void) {\n  char b[8];\n  gets(b);\n}\n", "CWE-242", 4),
    ("cpp", "#include <cstring>\nvoid f(const char* s) { char b[8]; strcpy(b, s); }\n", "CWE-120", 2),
    ("java", 'class A { void f(String d) throws Exception {\n Runtime.getRuntime().exec("ls " + d); } }\n', "CWE-78", 2),
    ("javascript", "const el = document.getElementById('x');\nel.innerHTML = location.hash;\n", "CWE-79", 2),
    ("php", '<?php\n$o = unserialize($_GET["x"]);\n', "CWE-502", 2),
    ("rust", "fn read(p: *const u8) -> u8 {\n    unsafe { *p }\n}\n", "CWE-242", 2),
]
CLEAN = [
    ("python", "import hashlib\n\ndef digest(b: bytes) -> str:\n    return hashlib.sha256(b).hexdigest()\n"),
    ("python", "import yaml\nconfig = yaml.safe_load(open('c.yml'))\n"),
    ("c", "#include <stdio.h>\nint main(void) { char b[8]; fgets(b, sizeof b, stdin); return 0; }\n"),
    ("java", "class A { int add(int a, int b) { return a + b; } }\n"),
    ("javascript", "el.textContent = location.hash;\n"),
    ("php", '<?php\n$o = json_decode($_GET["x"], true);\n'),
    ("rust", "fn add(a: u32, b: u32) -> u32 { a + b }\n"),
]


@pytest.mark.parametrize("language, code, cwe, line", INSECURE)
def test_flags_insecure_snippets(language, code, cwe, line):
    result = scan(code, language)
    assert result.verdict in ("BLOCK", "WARN")
    assert any(f.cwe == cwe and f.line == line and f.rule for f in result.findings), result.findings


@pytest.mark.parametrize("language, code", CLEAN)
def test_passes_clean_snippets(language, code):
    assert scan(code, language).verdict == "IGNORE"


def test_verdict_follows_severity():
    assert scan("import yaml\nyaml.load(s)\n", "python").verdict == "BLOCK"  # error severity
    assert scan("import hashlib\nhashlib.md5(b'')\n", "python").verdict == "WARN"


def test_agrees_with_the_codeshield_package():
    cs = pytest.importorskip("codeshield.cs")
    for language, code, *_ in INSECURE[:1] + INSECURE[3:4]:
        theirs = asyncio.run(cs.CodeShield.scan_code(code, cs.Language(language)))
        assert theirs.recommended_treatment.value.upper() == scan(code, language).verdict


def test_files_and_errors(tmp_path):
    path = tmp_path / "a.py"
    path.write_text(INSECURE[0][1])
    assert scan_file(str(path))["verdict"] == "WARN" and language_of("x.rs") == "rust"
    with pytest.raises(HerdError, match="language"):
        language_of("notes.txt")
    with pytest.raises(HerdError, match="not found"):
        scan_file(str(tmp_path / "missing.py"))
    with pytest.raises(HerdError, match="unknown language"):
        scan("x", "cobol")


def test_result_says_which_scanners_ran(tmp_path, monkeypatch):
    import subprocess
    import sys

    from herd.safety import codeshield

    monkeypatch.setattr(codeshield, "_codeshield", lambda code, language: None)  # the package not installed
    alone = scan(INSECURE[0][1], "python")
    assert alone.scanners == ["herd-regex"] and "herd[safety]" in alone.to_dict()["note"]
    monkeypatch.setattr(codeshield, "_codeshield", lambda code, language: [])
    both = scan(INSECURE[0][1], "python").to_dict()
    assert both["scanners"] == ["codeshield", "herd-regex"] and "note" not in both
    path = tmp_path / "a.py"
    path.write_text(INSECURE[0][1])
    printed = subprocess.run([sys.executable, "-m", "herd.cli", "codeshield", str(path)], capture_output=True, text=True)
    try:
        import codeshield as _  # noqa: F401
    except ImportError:
        assert "only herd's regex rules ran" in printed.stdout, printed.stdout
    else:
        assert "note" not in printed.stdout
