"""`gating audit log|show|verify` on a clone that fetches the notes itself, and `gating keygen`."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gating.audit import keys
from gating.audit.entry import Approval, EntryFacts, Override, RollbackRecord
from gating.audit.log import append_entry
from gating.commands.cli import main
from gating.git.notes import AUDIT_REF, LocalNotes
from gating.git.repository import Git, commit_all, init_repo

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path):
    """origin (bare) with 3 merges and their entries; a fresh clone; the public key file."""
    origin = init_repo(tmp_path / "origin.git", bare=True)
    work = init_repo(tmp_path / "work")
    key = keys.generate()
    pub = tmp_path / "audit.pub"
    pub.write_bytes(keys.public_pem(key))
    shas = []
    for i in range(3):
        (work.root / "prompt.md").write_text(f"version {i}\n")
        shas.append(commit_all(work, f"merge {i}"))
    store = LocalNotes(work)
    for i, c in enumerate(shas):
        append_entry(store, EntryFacts("merged", c, "acme/support-bot", "alice", pull_request=10 + i,
                                       evals={"verdict": "pass", "dataset_digest": "sha256:d1",
                                              "metrics": {"pass_rate": 0.1 + 0.2, "cost_per_request_usd": 0.000412345,
                                                          "latency_p95_ms": 1234.5678, "cases": 12},
                                              "source": "eval note"},
                                       approvals=[Approval("bob", "APPROVED", "2024-05-01T11:00:00Z", c)]),
                     key, NOW + timedelta(minutes=i))
    append_entry(store, EntryFacts("known_good", shas[1], "acme/support-bot", "deploy-bot",
                                   deployment={"environment": "production", "id": 7},
                                   discriminator="deployment 7"), key, NOW + timedelta(minutes=5))
    work.run("remote", "add", "origin", str(origin.root))
    work.run("push", "-q", "origin", "main", f"{AUDIT_REF}:{AUDIT_REF}")
    clone_dir = tmp_path / "clone"
    Git(tmp_path).run("clone", "-q", str(origin.root), str(clone_dir))
    clone = Git(clone_dir)
    clone.run("config", "user.name", "dev")
    clone.run("config", "user.email", "dev@example.invalid")
    return {"work": work, "clone": clone, "shas": shas, "key": key, "pub": str(pub), "tmp": tmp_path}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_log_fetches_the_notes_and_prints_one_line_per_entry(world, capsys):
    clone = world["clone"]
    assert clone.resolve(AUDIT_REF) is None  # git clone does not fetch notes
    code, out, _ = run(capsys, "-C", str(clone.root), "audit", "log")
    s = world["shas"]
    assert code == 0
    assert out.splitlines() == [  # GitHub accounts as @login, as a /rollback comment's requester is
        f"    1  2024-05-01T12:00:00Z  merged         {s[0][:12]}     #10  @alice  (evals pass)",
        f"    2  2024-05-01T12:01:00Z  merged         {s[1][:12]}     #11  @alice  (evals pass)",
        f"    3  2024-05-01T12:02:00Z  merged         {s[2][:12]}     #12  @alice  (evals pass)",
        f"    4  2024-05-01T12:05:00Z  known_good     {s[1][:12]}       -  @deploy-bot  (env production)",
    ]


def test_log_json_is_one_object_per_line(world, capsys):
    code, out, _ = run(capsys, "-C", str(world["clone"].root), "audit", "log", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[3]["event"] == "known_good" and rows[3]["commit"] == world["shas"][1]
    assert rows[0]["verdict"] == "pass" and rows[0]["predicate"]["approvals"][0]["reviewer"] == "bob"


def test_show_prints_the_entries_of_a_commit(world, capsys):
    s = world["shas"]
    code, out, _ = run(capsys, "-C", str(world["clone"].root), "audit", "show", s[1], "--key", world["pub"])
    assert code == 0
    first, second = out.split("\n\n")
    assert first.splitlines()[0] == "entry seq 2: merged at 2024-05-01T12:01:00Z"
    assert "  pull request       #11" in first
    assert f"  approvals          bob APPROVED at 2024-05-01T11:00:00Z on {s[1][:12]}" in first
    assert ("  evals              pass (dataset sha256:d1; from the eval note): cases 12, cost_per_request_usd "
            "$0.000412, latency_p95_ms 1,235 ms, pass_rate 0.300\n") in first  # rounded for people
    assert "  checks             not recorded (the entry predates recording them)\n" in first
    assert first.endswith(f"keyid {keys.keyid(world['key'])}  (verified)")
    assert second.splitlines()[0] == "entry seq 4: known_good at 2024-05-01T12:05:00Z"
    assert "  deployment         environment production, id 7" in second


def test_rollbacks_read_as_rollbacks_not_overrides(world, capsys):
    """A rolled_back entry shows where to, as asked, by whom, via what and why; one written before the
    predicate had rollback fields (the request kept as an override with scope `rollback`) reads the same
    way and still verifies; a real override is still counted."""
    work, s = world["work"], world["shas"]
    store = LocalNotes(work)
    url = "https://github.example/acme/support-bot/issues/7#issuecomment-1"
    append_entry(store, EntryFacts("rolled_back", s[2], "acme/support-bot", "@alice", pull_request=13,
                                   previous_known_good=s[1], discriminator=f"to {s[1]}",
                                   rollback=RollbackRecord(s[1], "last-good", "@alice",
                                                           "answers cite the wrong article", "comment",
                                                           f"comment {url}")),
                 world["key"], NOW + timedelta(minutes=10))
    append_entry(store, EntryFacts("rolled_back", s[0], "acme/support-bot", "@bob", previous_known_good=s[0],
                                   overrides=[Override("@bob", "rollback to previous", "2024-05-01T12:11:00Z",
                                                       "rollback")], discriminator=f"to {s[0]}"),
                 world["key"], NOW + timedelta(minutes=11))
    append_entry(store, EntryFacts("override", s[2], "acme/support-bot", "carol",
                                   overrides=[Override("carol", "hotfix for incident 12", "2024-05-01T12:12:00Z")]),
                 world["key"], NOW + timedelta(minutes=12))
    code, out, _ = run(capsys, "-C", str(work.root), "audit", "log", "--no-fetch")
    assert code == 0
    assert out.splitlines()[4:] == [
        f"    5  2024-05-01T12:10:00Z  rolled_back    {s[2][:12]}     #13  @alice  "
        f"(to {s[1][:12]} (last-good) by @alice via comment: answers cite the wrong article)",
        f"    6  2024-05-01T12:11:00Z  rolled_back    {s[0][:12]}       -  @bob  "
        f"(to {s[0][:12]} by @bob: rollback to previous)",
        f"    7  2024-05-01T12:12:00Z  override       {s[2][:12]}       -  @carol  (1 override(s))",
    ]
    code, out, _ = run(capsys, "-C", str(work.root), "audit", "show", s[2], "--no-fetch")
    rolled = out.split("\n\n")[1]
    assert rolled.splitlines()[0] == "entry seq 5: rolled_back at 2024-05-01T12:10:00Z"
    assert "  overrides          -\n" in rolled
    assert (f"  rollback           to {s[1][:12]} (last-good) by @alice via comment: answers cite the wrong "
            f"article\n  requested from     comment {url}\n") in rolled
    assert run(capsys, "-C", str(work.root), "audit", "verify", "--key", world["pub"], "--no-fetch")[0] == 0


def test_show_prints_the_check_runs_a_merged_entry_recorded():
    from gating.audit.entry import make_line, parse_line
    from gating.commands.audit import show_text

    sha = "a" * 40
    facts = EntryFacts("merged", sha, "acme/support-bot", "carol", pull_request=11, checks={
        "gating / approval": {"conclusion": "success", "status": "completed", "app": "gating", "app_id": 7,
                              "head_sha": "b" * 40, "check_run_id": 3, "title": "1 of 1 rules approved"},
        "gating / eval": None})
    text = show_text(parse_line(make_line(facts, NOW, 1, None, keys.generate()), sha), "keyid k")
    assert f"  checks             gating / approval: success by gating (app id 7) on {'b' * 12}\n" \
           "                     gating / eval: none\n" in text


def test_show_a_commit_without_entries(world, capsys):
    clone = world["clone"]
    (clone.root / "x").write_text("x")
    sha = commit_all(clone, "unaudited")
    assert run(capsys, "-C", str(clone.root), "audit", "show", sha) == (
        1, "", f"gating: no audit entry on commit {sha[:12]}\n")
    code, _, err = run(capsys, "-C", str(clone.root), "audit", "show", "no-such-rev")
    assert code == 2 and err == "gating: error: unknown revision 'no-such-rev'\n"


def test_verify_passes_on_a_clean_clone(world, capsys):
    code, out, _ = run(capsys, "-C", str(world["clone"].root), "audit", "verify", "--key", world["pub"])
    assert code == 0
    assert out == (f"ok: 4 entries (seq 1..4), 4 notes commits; every signature verifies "
                   f"({keys.keyid(world['key'])[:16]}), the chain is unbroken and no notes commit removed or "
                   "changed a line\n")


def test_verify_uses_the_published_key_when_none_is_given(world, capsys):
    clone = world["clone"]
    code, _, err = run(capsys, "-C", str(clone.root), "audit", "verify")
    assert code == 2 and err == ("gating: error: no public key: pass --key PUB.pem (or commit it as "
                                 ".gating/audit.pub)\n")
    (clone.root / ".gating").mkdir()
    (clone.root / ".gating/audit.pub").write_bytes(Path(world["pub"]).read_bytes())
    commit_all(clone, "Publish the audit public key")
    assert run(capsys, "-C", str(clone.root), "audit", "verify")[0] == 0


def test_verify_with_a_bad_key_file(world, capsys):
    bad = world["tmp"] / "bad.pem"
    bad.write_text("not a key")
    code, _, err = run(capsys, "-C", str(world["clone"].root), "audit", "verify", "--key", str(bad))
    assert code == 2 and err.startswith(f"gating: error: {bad}: not a PEM public key")
    code, _, err = run(capsys, "-C", str(world["clone"].root), "audit", "verify", "--key", "missing.pem")
    assert code == 2 and err == "gating: error: missing.pem: cannot read key file (No such file or directory)\n"


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path, capsys):
    priv = tmp_path / "keys" / "audit.key"
    code, out, _ = run(capsys, "keygen", str(priv))
    assert code == 0
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = keys.load_private(priv.read_bytes())
    pub = keys.load_public((tmp_path / "keys" / "audit.key.pub").read_bytes())
    assert keys.keyid(pub) == keys.keyid(key)
    assert out == (f"wrote {priv} (private, mode 0600) and {priv}.pub (public)\n"
                   f"keyid {keys.keyid(key)}\n")
    code, _, err = run(capsys, "keygen", str(priv))
    assert code == 2 and err == f"gating: error: {priv}: already exists (pass --force to replace it)\n"
    assert run(capsys, "keygen", str(priv), "--force")[0] == 0
    assert keys.keyid(keys.load_private(priv.read_bytes())) != keys.keyid(key)


@pytest.mark.parametrize("action", [["log"], ["verify", "--key", "PUB"], ["show", "HEAD"]], ids=["log", "verify", "show"])
def test_a_remote_that_does_not_exist_is_an_error_not_the_local_copy(world, capsys, action):
    """A mistyped --remote must not read as "no audit entries" (verify would exit 0 on an empty log)."""
    clone = world["clone"]
    argv = [world["pub"] if a == "PUB" else a for a in action]
    code, out, err = run(capsys, "-C", str(clone.root), "audit", *argv, "--remote", "upstrem")
    assert (code, out) == (2, "")
    assert err == "gating: error: no remote 'upstrem' in this repository (remotes: origin); pass --remote NAME\n"
    assert clone.resolve(AUDIT_REF) is None


def test_keygen_refuses_to_write_the_public_key_over_the_private_key(tmp_path, capsys):
    priv = tmp_path / "audit.key"
    code, out, err = run(capsys, "keygen", str(priv), "--public", str(tmp_path / "." / "audit.key"))
    assert (code, out) == (2, "")
    assert err == (f"gating: error: {tmp_path / '.' / 'audit.key'}: the public key cannot be written over the "
                   "private key; pass another --public file\n")
    assert not priv.exists()


KEY_FILES = {
    "public": lambda k: keys.public_pem(k),
    "passphrase": lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")),
    "openssh": lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                         serialization.NoEncryption()),
    "rsa": lambda k: rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
}
KEY_MESSAGES = {
    "public": "is a public key; signing needs the private key (the file `gating keygen` wrote without .pub)",
    "passphrase": "the private key is protected by a passphrase, which gating cannot ask for; use an unencrypted "
                  "PEM key kept as a secret (e.g. `openssl pkey -in KEY -out KEY.plain`)",
    "openssh": "is an OpenSSH key; gating reads PEM keys (`gating keygen` writes a pair)",
    "rsa": "not an Ed25519 key (RSAPrivateKey); audit entries are signed with Ed25519 (`gating keygen` writes a pair)",
}


@pytest.mark.parametrize("kind", list(KEY_FILES))
def test_a_signing_key_that_is_not_an_unencrypted_ed25519_private_key_is_named(world, capsys, kind):
    bad = world["tmp"] / f"{kind}.pem"
    bad.write_bytes(KEY_FILES[kind](world["key"]))
    code, out, err = run(capsys, "-C", str(world["clone"].root), "rollback", "--sign", str(bad), "--dry-run")
    assert (code, out) == (2, "")
    assert err == f"gating: error: {bad}: {KEY_MESSAGES[kind]}\n"
    assert world["clone"].run("branch", "--list", "gating/*") == ""
