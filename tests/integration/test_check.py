"""`mailspliced -c FILE --check` on the Stalwart proxy's published configuration files.

The reference files name /etc/proxy/... paths that do not exist here: --check must fail
and name each missing file with its line. With those paths pointed at real files it
must pass and print the summary. No backends, no root needed.
"""

import os
import re
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAEMON = os.environ.get("MS_DAEMON") or os.path.join(REPO_ROOT, "build", "mailspliced")
# The Stalwart migration proxy's published configuration files, as published (copied
# from ../shared/reference so a fresh clone tests itself).
REFERENCE = os.path.join(REPO_ROOT, "tests", "data", "reference")
FILES = ["config.sample.toml", "config.dovecot-postfix.toml", "config.stalwart-upgrade.toml"]


def reference(name):
    path = os.path.join(REFERENCE, name)
    if not os.path.exists(path):
        pytest.skip(f"reference configuration {path} not present in this checkout")
    return path


def run(*args, env=None):
    e = dict(os.environ)
    e.pop("PROXY_ADMIN_TOKEN", None)
    e.pop("MAILSPLICE_ADMIN_TOKEN", None)
    e.update(env or {})
    return subprocess.run([DAEMON, *args], capture_output=True, text=True, env=e, timeout=30)


def self_signed(tmp_path, cert_name="cert.pem", key_name="key.pem"):
    """A P-256 certificate and its 0600 key: --check really loads them."""
    cert, key = tmp_path / cert_name, tmp_path / key_name
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=mail.example.com",
                    "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    key.chmod(0o600)
    return cert, key


def check_passes(cfg, listeners=r"\d+"):
    """--check on cfg exits 0 and prints the summary with an empty mapping table."""
    r = run("-c", str(cfg), "--check")
    assert r.returncode == 0, r.stderr
    assert f"configuration {cfg}: OK" in r.stdout
    assert re.search(rf"^listeners: {listeners}$", r.stdout, re.M)
    assert re.search(r"^mapping: file .* 0 entries", r.stdout, re.M)


def etc_proxy_lines(path):
    """{"/etc/proxy/...": line number} for every referenced file."""
    found = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            code = line.split("#", 1)[0]
            for m in re.finditer(r'"(/etc/proxy/[^"]+)"', code):
                found[m.group(1)] = n
    return found


@pytest.mark.parametrize("name", FILES)
def test_reference_fails_naming_missing_files(name):
    path = reference(name)
    r = run("-c", path, "--check")
    assert r.returncode == 2, r.stdout + r.stderr
    wanted = etc_proxy_lines(path)
    assert wanted, "the reference file should reference /etc/proxy files"
    for file, line in wanted.items():
        assert re.search(rf"^{re.escape(path)}:{line}: [a-z_.]+: {re.escape(file)}: No such file",
                         r.stderr, re.M), f"{file} (line {line}) not reported:\n{r.stderr}"
    # nothing but missing files is wrong with them
    for err in r.stderr.strip().splitlines():
        assert "No such file" in err, err


@pytest.mark.parametrize("name", FILES)
def test_reference_passes_with_real_paths(name, tmp_path):
    path = reference(name)
    text = open(path).read()
    for file in etc_proxy_lines(path):
        local = tmp_path / file.lstrip("/").replace("/", "_")
        if file.endswith(".token"):
            local.write_text("x" * 40 + "\n")
            local.chmod(0o600)
        elif file.endswith((".tsv", ".txt", "mappings")):
            local.write_text("# no mappings yet\n")
        else:
            local.write_text("placeholder\n")
        text = text.replace(f'"{file}"', f'"{local}"')
    # certificates must really load for --check: make one
    cert, key = self_signed(tmp_path)
    text = re.sub(r'cert = "[^"]+"', f'cert = "{cert}"', text)
    text = re.sub(r'key = "[^"]+"', f'key = "{key}"', text)
    local_cfg = tmp_path / name
    local_cfg.write_text(text)
    check_passes(local_cfg)


def test_config_error_exit_status_and_format(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nthreads = "many"\n')
    r = run("-c", str(cfg), "--check")
    assert r.returncode == 2
    assert f"{cfg}:2: server.threads: expected integer, found string" in r.stderr


def test_toml_syntax_error_names_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nthreads = 1\nhostname = "unterminated\n')
    r = run("-c", str(cfg), "--check")
    assert r.returncode == 2
    assert r.stderr.startswith(f"{cfg}:3: ")


def test_proxy_config_environment(tmp_path):
    """PROXY_CONFIG names the file, as for the reference proxy."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[bogus]\n")
    r = run("--check", env={"PROXY_CONFIG": str(cfg)})
    assert r.returncode == 2
    assert f"{cfg}:1: bogus: unknown key" in r.stderr


# ---- the configurations we ship (conf/, installed as examples by the package) ----

SHIPPED = ["dovecot-postfix-to-stalwart.toml", "stalwart-to-stalwart.toml"]
CONF = os.path.join(REPO_ROOT, "conf")


def edit_lines(path):
    """Line numbers of the values an operator must edit ("# EDIT")."""
    with open(path) as f:
        return [n for n, line in enumerate(f, 1) if "# EDIT" in line]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_as_is_names_what_is_missing(name):
    """On a host without the files (or the user) it names, --check lists each with
    its line: the operator's to-do list."""
    path = os.path.join(CONF, name)
    assert edit_lines(path), "every value to change is marked EDIT"
    r = run("-c", path, "--check")
    assert r.returncode == 2, r.stdout + r.stderr
    for file in ("/etc/mailsplice/tls/fullchain.pem", "/etc/mailsplice/admin.token",
                 "/var/lib/mailsplice/mappings.tsv"):
        if not os.path.exists(file):
            assert re.search(rf"^{re.escape(path)}:\d+: [a-z_.]+: {re.escape(file)}: ",
                             r.stderr, re.M), f"{file} not reported:\n{r.stderr}"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_passes_check(name, tmp_path):
    """With its paths pointed at real files (the shipped mappings.tsv, a fresh key, a
    0600 token) and an existing unprivileged user, the file is valid as shipped."""
    text = open(os.path.join(CONF, name)).read()
    cert, key = self_signed(tmp_path, "fullchain.pem", "privkey.pem")
    token = tmp_path / "admin.token"
    token.write_text("0123456789abcdef" * 4 + "\n")
    token.chmod(0o600)
    mappings = tmp_path / "mappings.tsv"
    mappings.write_text(open(os.path.join(CONF, "mappings.tsv")).read())
    for shipped, local in (("/etc/mailsplice/tls/fullchain.pem", cert),
                           ("/etc/mailsplice/tls/privkey.pem", key),
                           ("/etc/mailsplice/admin.token", token),
                           ("/var/lib/mailsplice/mappings.tsv", mappings)):
        assert f'"{shipped}"' in text
        text = text.replace(f'"{shipped}"', f'"{local}"')
    text = text.replace('user = "mailsplice"', 'user = "nobody"')
    text = text.replace('group = "mailsplice"', 'group = "nogroup"')
    cfg = tmp_path / name
    cfg.write_text(text)
    # the Stalwart upgrade also serves HTTP (JMAP, WebDAV, web admin) on 443
    check_passes(cfg, listeners="9" if name == "stalwart-to-stalwart.toml" else "8")
    # the shipped mapping file documents its format and holds no mapping
    assert all(line.startswith("#") or not line.strip()
               for line in open(os.path.join(CONF, "mappings.tsv")))


@pytest.mark.parametrize("name", ["fleet-node1.toml", "fleet-node2.toml"])
def test_shipped_fleet_config_passes_check(name, tmp_path):
    """The fleet example (issue 21): valid as shipped once its certificate and token
    exist; the summary names the store, the bus channel and the node, never the URL
    (it may carry a password)."""
    path = os.path.join(CONF, name)
    assert edit_lines(path)
    text = open(path).read()
    cert, key = self_signed(tmp_path, "fullchain.pem", "privkey.pem")
    token = tmp_path / "admin.token"
    token.write_text("0123456789abcdef" * 4 + "\n")
    token.chmod(0o600)
    for shipped, local in (("/etc/mailsplice/tls/fullchain.pem", cert),
                           ("/etc/mailsplice/tls/privkey.pem", key),
                           ("/etc/mailsplice/admin.token", token)):
        text = text.replace(f'"{shipped}"', f'"{local}"')
    text = text.replace('user = "mailsplice"', 'user = "nobody"')
    text = text.replace('group = "mailsplice"', 'group = "nogroup"')
    cfg = tmp_path / name
    cfg.write_text(text)
    r = run("-c", str(cfg), "--check")
    assert r.returncode == 0, r.stderr
    node = name[len("fleet-node"):-len(".toml")]
    assert re.search(rf"^mapping: sql, pool_size 8, lookup_timeout 2000ms, bus channel "
                     rf"mailsplice, node mx{node}$", r.stdout, re.M), r.stdout
    assert "postgresql://" not in r.stdout and "not served" not in r.stdout


def test_unknown_server_user_is_a_config_error(tmp_path):
    cfg = tmp_path / "user.toml"
    cfg.write_text('[server]\nuser = "no-such-user-here"\ngroup = "no-such-group-here"\n')
    r = run("-c", str(cfg), "--check")
    assert r.returncode == 2
    assert f'{cfg}:2: server.user: no such user "no-such-user-here"' in r.stderr
    assert f'{cfg}:3: server.group: no such group "no-such-group-here"' in r.stderr
