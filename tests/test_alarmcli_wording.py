"""The alarm table in zh-CN speaks as the messages do (issue 14); en stays raw for scripts."""

from __future__ import annotations

from typing import Any

from gateway.tools.alarmcli import alarm_table


def _doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "alarm_id": "a1", "rule": "fire_confirmed", "severity": "critical",
        "state": "acknowledged", "building": "b1", "zone": "east", "device": None,
        "fired_at": "2026-11-18T11:06:40Z", "message": "Confirmed fire in zone east",
        "acknowledged_by": "duty", "disposition": "real"}
    doc.update(over)
    return doc


def test_zh_table_uses_the_officers_words_and_stays_aligned() -> None:
    text = alarm_table([_doc(), _doc(alarm_id="a2", rule="tamper", severity="warning",
                                     state="firing", acknowledged_by=None)], "zh-CN")
    head, first, second = text.splitlines()
    assert head.split() == ["级别", "状态", "开始时间", "位置", "类型", "详情", "响应", "编号"]
    for word in ("特急", "已响应", "复合火警", "duty (属实)"):
        assert word in first
    assert "提示" in second
    assert "防拆报警" in second
    # Columns line up in a terminal: "编号" starts where each row's ID does (CJK = 2 columns).
    def col(line: str, part: str) -> int:
        before = line[:line.index(part)]
        return sum(2 if "\u4e00" <= ch <= "\u9fff" else 1 for ch in before)
    assert col(head, "编号") == col(first, "a1") == col(second, "a2")


def test_en_table_is_unchanged() -> None:
    text = alarm_table([_doc()])
    assert text.splitlines()[0].split()[:3] == ["SEVERITY", "STATE", "SINCE"]
    assert "critical" in text
    assert "acknowledged" in text
    assert "duty (real)" in text
    assert alarm_table([], "zh-CN") == "无告警"
