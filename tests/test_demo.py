"""The browser demo: upload limits, no gradio in the core, and an end-to-end run in headless Chromium.

The browser test needs Chromium from the system packages (Debian: ``apt-get install chromium``,
which ``.ci/run`` does) and the ``playwright`` Python package (the ``test`` extra), used only to
drive that system Chromium (no browser download). It is skipped, saying which is missing, without them.
Set DIFFDEBLUR_DEMO_SCREENSHOT=PATH to keep the screenshot (docs/demo.png is made that way).
"""
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffdeblur.cli import main
from diffdeblur.demo import Limits, check_upload, demo_models
from diffdeblur.errors import ConfigError
from diffdeblur.example import example_pair
from diffdeblur.io import read_image, write_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 180
RESULT_TIMEOUT_MS = 180_000


def test_upload_limits_give_a_clear_message(tmp_path):
    path = tmp_path / "big.png"
    write_image(path, np.zeros((300, 400, 3), np.float32))
    check_upload(path, Limits())
    with pytest.raises(ConfigError, match=r"400x300 \(0.1 megapixels\); the demo accepts up to 0.1 megapixels"):
        check_upload(path, Limits(megapixels=0.1))
    with pytest.raises(ConfigError, match="the demo accepts up to 0.0001 MB"):
        check_upload(path, Limits(megabytes=0.0001))
    (tmp_path / "not.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="not an image"):
        check_upload(tmp_path / "not.png", Limits())


def test_core_does_not_import_gradio():
    code = ("import sys, diffdeblur, diffdeblur.inference, diffdeblur.demo, diffdeblur.commands.demo, diffdeblur.cli; "
            "assert 'gradio' not in sys.modules, 'gradio imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_offers_the_default_and_shipped_names():
    names = demo_models(["x.safetensors"])
    assert names[0] == "default" and "nafnet-small" in names and names[-1] == "x.safetensors"


def _missing() -> str | None:
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install chromium)"
    for module, extra in (("playwright", "playwright"), ("gradio", "gradio")):
        if importlib.util.find_spec(module) is None:
            return f"the Python package {extra} is not installed (pip install -e '.[test]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited with code {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the demo did not answer on {url} within {START_TIMEOUT_S} s")


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_demo_in_a_headless_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    src = tmp_path / "blurry.png"
    write_image(src, example_pair(96, 128, seed=7)[0])
    ref = tmp_path / "cli.png"
    assert main(["deblur", str(src), "-o", str(ref), "--device", "cpu", "--quiet"]) == 0
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([sys.executable, "-m", "diffdeblur.cli", "demo", "--port", str(port), "--device", "cpu"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_server(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 1000})
            try:
                page = browser.new_page()
                page.goto(url)
                page.locator("#upload input[type=file]").set_input_files(str(src))
                page.locator("#upload").get_by_text("blurry.png").first.wait_for(timeout=60_000)
                page.locator("#run").click()
                link = page.locator("#download a").first
                link.wait_for(timeout=RESULT_TIMEOUT_MS)
                page.locator("#after img").first.wait_for(timeout=60_000)
                result = page.request.get(link.get_attribute("href")).body()
                shot = tmp_path / "demo.png"
                page.screenshot(path=str(shot), full_page=True)
                if os.environ.get("DIFFDEBLUR_DEMO_SCREENSHOT"):
                    shutil.copyfile(shot, os.environ["DIFFDEBLUR_DEMO_SCREENSHOT"])
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    restored = np.asarray(Image.open(io.BytesIO(result)).convert("RGB"))
    expected = np.round(read_image(ref)[0] * 255).astype(np.uint8)
    blurry = np.round(read_image(src)[0] * 255).astype(np.uint8)
    assert restored.shape == expected.shape == blurry.shape
    assert np.abs(restored.astype(int) - blurry).mean() > 0.5  # the demo changed the image
    assert np.array_equal(restored, expected)  # ... exactly as `diffdeblur deblur` does
    assert shot.stat().st_size > 10_000


def test_steps_are_offered_for_diffusion_models_only(tmp_path):
    from diffdeblur import build_model, save_model
    from diffdeblur.demo import DIFFUSION_KINDS, model_kind

    save_model(build_model("sr3-tiny"), tmp_path / "sr3.safetensors")
    assert model_kind(str(tmp_path / "sr3.safetensors")) in DIFFUSION_KINDS
    assert model_kind("default") not in DIFFUSION_KINDS
