"""The CLI contract: env defaults, no secret arguments, exit codes, secret masking."""

from __future__ import annotations

import json
import logging

from gpu_stack_runtime.stager import cli


def test_every_option_has_an_env_default(monkeypatch):
    monkeypatch.setenv("STAGE_SOURCE", "hub")
    monkeypatch.setenv("STAGE_REPO_ID", "org/m")
    monkeypatch.setenv("STAGE_ALLOW_PATTERNS", "*.json, *.safetensors")
    monkeypatch.setenv("STAGE_JOBS", "7")
    monkeypatch.setenv("STAGE_VERIFY", "true")
    args = cli.build_parser().parse_args([])
    assert (args.source, args.repo_id, args.jobs, args.verify) == ("hub", "org/m", 7, True)
    assert args.allow_pattern == ["*.json", "*.safetensors"]


def test_no_argument_can_carry_a_secret():
    flags = [o for a in cli.build_parser()._actions for o in a.option_strings]
    risky = [f for f in flags if any(w in f for w in ("token", "secret", "password", "key"))]
    assert risky == ["--token-file"]


def test_missing_required_options_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("STAGE_SOURCE", raising=False)
    assert cli.main(["--dest", str(tmp_path / "m")]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "config"
    assert cli.main(["--source", "hub", "--dest", str(tmp_path / "m")]) == 2
    assert "--repo-id" in json.loads(capsys.readouterr().out)["message"]
    assert cli.main(["--source", "s3", "--bucket", "b", "--dest",
                     str(tmp_path / "no" / "such" / "m")]) == 2
    assert "is the volume mounted" in json.loads(capsys.readouterr().out)["message"]
    assert not any(tmp_path.iterdir())


def test_unreadable_token_file_is_a_credentials_error(capsys, tmp_path):
    rc = cli.main(["--source", "hub", "--repo-id", "o/m", "--token-file",
                   str(tmp_path / "missing"), "--dest", str(tmp_path / "m")])
    assert rc == 3 and json.loads(capsys.readouterr().out)["error"] == "credentials"


def test_registered_secrets_are_masked_in_every_log_record(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text("hf_super_secret_value\n")
    assert cli.read_secret(str(secret_file), "token") == "hf_super_secret_value"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "auth %s",
                               ("hf_super_secret_value",), None)
    cli._RedactSecrets().filter(record)
    assert record.getMessage() == "auth ***"


def test_a_signed_url_is_masked_in_logs_and_in_the_result(capsys, monkeypatch):
    signed = "http://files/m.tar?X-Amz-Signature=s1gned-value"
    monkeypatch.setattr(cli._RedactSecrets, "secrets", set())
    cli.hide_signed_urls(cli.build_parser().parse_args(["--url", signed]))
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "GET %s failed: %s",
                               (signed, "X-Amz-Signature=s1gned-value"), None)
    cli._RedactSecrets().filter(record)
    assert "s1gned" not in record.getMessage()
    cli._emit({"failed": True, "message": f"cannot fetch {signed}"}, None)
    out = capsys.readouterr().out
    assert "s1gned" not in out and "cannot fetch ***" in out
    monkeypatch.setattr(cli._RedactSecrets, "secrets", set())
    cli.hide_signed_urls(cli.build_parser().parse_args(["--url", "http://files/m.tar"]))
    assert cli._RedactSecrets.secrets == set()  # a plain URL stays readable
