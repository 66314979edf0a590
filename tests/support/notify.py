"""A notification routing file and the channel secrets it names, served by the local fakes.

Shared by the end-to-end notification tests (wiring, dead notifications): the tenant's contact
on a DingTalk robot, the duty officer and the park manager on webhooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.notify_servers import DINGTALK_URL, ProviderServer

DT_SECRET = "SEC000000000000000000000000000000000000000000000000000000000000000"
WH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def routing(base_url: str, *, escalate_after_s: float = 2.0) -> dict[str, Any]:
    """A park with a tenant: hs-elec's safety officer on the ops DingTalk robot, the duty
    officer on a webhook; the park manager (a second webhook) if nobody acknowledges."""
    return {"notify": {
        "channels": {
            "robot": {"type": "dingtalk", "settings": {"base_url": base_url},
                      "secret_env": {"url": "T_DT_URL", "signing": "T_DT_SECRET"},
                      "rate_limit_per_min": 20},
            "duty_hook": {"type": "webhook",
                          "secret_env": {"url": "T_DUTY_URL", "signing": "T_WH_SECRET"}},
            "mgr_hook": {"type": "webhook",
                         "secret_env": {"url": "T_MGR_URL", "signing": "T_WH_SECRET"}},
        },
        "contacts": {
            "li-hs": {"name": "李安全", "channels": ["robot"]},
            "wang-duty": {"name": "王值班", "channels": ["duty_hook"]},
            "zhao-manager": {"name": "赵经理", "channels": ["mgr_hook"]},
        },
        "tenants": {"hs-elec": ["li-hs"]},
        "park_manager": "zhao-manager",
        "route": {"receivers": [], "routes": [
            {"name": "fire", "match": {"rule": ["fire_alarm"]},
             "receivers": ["tenant", "wang-duty"]}]},
        "escalation": {"min_severity": "critical", "tiers": [
            {"after_s": 0, "receivers": ["tenant"]},
            {"after_s": escalate_after_s, "receivers": ["park_manager"]}]},
    }}


def set_channel_env(monkeypatch: pytest.MonkeyPatch, srv: ProviderServer) -> None:
    """The secrets ``routing`` names, pointing its channels at ``srv``."""
    monkeypatch.setenv("T_DT_URL", DINGTALK_URL)
    monkeypatch.setenv("T_DT_SECRET", DT_SECRET)
    monkeypatch.setenv("T_DUTY_URL", f"{srv.url}/duty")
    monkeypatch.setenv("T_MGR_URL", f"{srv.url}/manager")
    monkeypatch.setenv("T_WH_SECRET", WH_SECRET)


def write_notify_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def webhook_bodies(srv: ProviderServer, path: str) -> list[dict[str, Any]]:
    """The JSON bodies ``srv`` received as a webhook on ``path``, in order."""
    return [r.json() for r in srv.of("webhook") if r.path == path]
