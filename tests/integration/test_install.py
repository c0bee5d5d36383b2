"""`make install` honours PREFIX and DESTDIR (issue 10): the daemon, both man pages, the
unit (its paths rewritten for the prefix), tmpfiles and modules-load snippets, the
example configurations and the docs land where systemd and man look for them. The
Debian package built from the same rule is tested by `make package-test`."""

import os
import subprocess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def install(tmp_path, prefix):
    dest = tmp_path / "dest"
    r = subprocess.run(["make", "-s", "-C", REPO_ROOT, "install", f"PREFIX={prefix}",
                        f"DESTDIR={dest}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def test_install_usr_local(tmp_path):
    dest = install(tmp_path, "/usr/local")
    files = {
        "usr/local/sbin/mailspliced": 0o755,
        "usr/local/share/man/man8/mailspliced.8": 0o644,
        "usr/local/share/man/man5/mailsplice.toml.5": 0o644,
        "usr/local/lib/systemd/system/mailsplice.service": 0o644,
        "usr/local/lib/tmpfiles.d/mailsplice.conf": 0o644,
        "usr/local/lib/modules-load.d/mailsplice.conf": 0o644,
        "usr/local/share/doc/mailsplice/examples/dovecot-postfix-to-stalwart.toml": 0o644,
        "usr/local/share/doc/mailsplice/examples/stalwart-to-stalwart.toml": 0o644,
        "usr/local/share/doc/mailsplice/examples/mappings.tsv": 0o644,
        "usr/local/share/doc/mailsplice/examples/dovecot-postfix-trust.conf": 0o644,
        "usr/local/share/doc/mailsplice/examples/fleet-node1.toml": 0o644,
        "usr/local/share/doc/mailsplice/examples/fleet-node2.toml": 0o644,
        "usr/local/share/doc/mailsplice/examples/mailsplice-postgres.sql": 0o644,
        "usr/local/share/doc/mailsplice/cutover.md": 0o644,
    }
    for path, mode in files.items():
        st = os.stat(dest / path)
        assert st.st_mode & 0o777 == mode, (path, oct(st.st_mode))
    assert (dest / "usr/local/etc/mailsplice").is_dir()
    unit = (dest / "usr/local/lib/systemd/system/mailsplice.service").read_text()
    assert "ExecStart=/usr/local/sbin/mailspliced -c /usr/local/etc/mailsplice/mailsplice.toml" \
        in unit
    assert "/usr/sbin/" not in unit and "\n/etc/mailsplice" not in unit
    r = subprocess.run([str(dest / "usr/local/sbin/mailspliced"), "--version"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("mailspliced ")


def test_install_usr_is_debian_layout(tmp_path):
    dest = install(tmp_path, "/usr")
    unit = dest / "lib/systemd/system/mailsplice.service"
    assert "ExecStart=/usr/sbin/mailspliced -c /etc/mailsplice/mailsplice.toml" in unit.read_text()
    assert (dest / "usr/lib/tmpfiles.d/mailsplice.conf").exists()
    assert (dest / "etc/mailsplice").is_dir()


def test_man_pages_render_without_warnings():
    for page in ("man/mailspliced.8", "man/mailsplice.toml.5"):
        r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", os.path.join(REPO_ROOT, page)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)


def test_unit_verifies(tmp_path):
    """The unit as systemd 252 reads it (issue 23 changed ExecReload to --upgrade and
    NotifyAccess to exec): every directive known, every executable present. The man
    pages are checked by `make package-test`, where they are installed."""
    import shutil
    import pytest
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    with open(os.path.join(REPO_ROOT, "conf", "mailsplice.service")) as f:
        text = f.read()
    unit = tmp_path / "mailsplice.service"
    unit.write_text(text.replace("/usr/sbin/mailspliced",
                                 os.path.join(REPO_ROOT, "build", "mailspliced")))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    assert "ExecReload=/usr/sbin/mailspliced --upgrade -c /etc/mailsplice/mailsplice.toml" in text
    assert "NotifyAccess=exec" in text and "RuntimeDirectory=mailsplice" in text
