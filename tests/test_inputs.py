"""Inputs that used to slip through: weights rewritten under an unchanged size and mtime, calibration
windows longer than the model's positions, and the dashboard zipping folders that are not our bundles."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import zipfile

import pytest

from pruning.errors import TicketLabError


def test_rewritten_weights_with_the_same_size_and_mtime_get_a_new_hash(state, tiny_llama_dir, tmp_path):
    from pruning.models import checkpoint_sha256, load_model

    d = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, d)
    first = checkpoint_sha256(d)
    assert checkpoint_sha256(d) == first  # served from the cache
    f = d / "model.safetensors"
    before = f.stat()
    time.sleep(0.02)  # past the file system's timestamp granularity, so the rewrite is a later change
    with open(f, "r+b") as fh:  # in place: same inode, same size
        fh.seek(-16, os.SEEK_END)
        tail = fh.read(16)
        fh.seek(-16, os.SEEK_END)
        fh.write(bytes(b ^ 0x55 for b in tail))
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime put back
    after = f.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    second = checkpoint_sha256(d)
    assert second != first
    assert load_model(str(d)).weights_sha256 == second
    cache = json.loads((state / "models" / "weight_hashes.json").read_text())
    assert [v["sha256"] for v in cache.values()].count(second) == 1 and first not in [v["sha256"] for v in cache.values()]


def test_calibration_windows_longer_than_the_models_positions_are_refused(tiny_llama):
    from pruning import calibration

    limit = tiny_llama.adapter.max_positions
    assert limit == 256
    with pytest.raises(TicketLabError, match=r"--calib-len 300 is longer than the model's maximum positions \(256\)"):
        calibration.from_corpus(tiny_llama.tokenizer, 2, 300, 0, max_positions=limit)
    assert calibration.from_corpus(tiny_llama.tokenizer, 2, 256, 0, max_positions=limit).length == 256
    with pytest.raises(TicketLabError, match="--seed"):
        calibration.from_corpus(tiny_llama.tokenizer, 2, 16, -1)


def test_calibration_token_files_longer_than_the_models_positions_are_refused(tmp_path):
    import torch

    from pruning import calibration

    torch.save(torch.zeros(2, 300, dtype=torch.long), tmp_path / "calib.pt")
    with pytest.raises(TicketLabError, match="window length 300 is longer than the model's maximum positions"):
        calibration.from_token_file(tmp_path / "calib.pt", vocab_size=100, max_positions=256)
    assert calibration.from_token_file(tmp_path / "calib.pt", vocab_size=100, max_positions=300).length == 300


def _bundle(folder):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "ticket").mkdir()
    (folder / "ticket" / "masks.safetensors").write_bytes(b"m")
    return folder


def test_the_dashboard_zips_only_bundles_under_the_state_folder_and_never_follows_links(state, tmp_path):
    from app.dashboard.bundle_zip import zip_bundle

    exports = state / "exports"
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "id_rsa").write_text("private")
    good = _bundle(exports / "t-masks")
    (good / "leak").symlink_to(secret)  # a link out of the bundle: a folder
    (good / "key").symlink_to(secret / "id_rsa")  # and a file
    names = zipfile.ZipFile(io.BytesIO(zip_bundle(good))).namelist()
    assert sorted(names) == ["t-masks/manifest.json", "t-masks/ticket/masks.safetensors"]
    elsewhere = _bundle(tmp_path / "home" / "x")  # holds a manifest.json, but is not ours
    (exports / "linked").symlink_to(elsewhere)  # nor is a link under exports/ to it
    for folder in (elsewhere, exports / "linked", secret, exports / ".." / "exports" / "t-masks" / "ticket"):
        with pytest.raises(TicketLabError, match="only"):
            zip_bundle(folder)
    assert zip_bundle(exports / ".." / "exports" / "t-masks")  # the same bundle, spelt another way


def test_prune_refuses_a_calib_len_beyond_the_models_positions(state, tiny_llama_dir, capsys):
    from app.cli import main

    rc = main(["prune", "--model", str(tiny_llama_dir), "--method", "wanda", "--sparsity", "0.5",
               "--calib-samples", "2", "--calib-len", "300"])
    err = capsys.readouterr().err
    assert rc == 2 and "--calib-len 300 is longer than the model's maximum positions (256)" in err, err
    assert not (state / "tickets").exists() or not list((state / "tickets").iterdir())
