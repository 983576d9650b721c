"""Issue 26, robustness and determinism cases: each test fails on the code before the fix."""

import pytest

from crossdiff.errors import CrossdiffError  # noqa: F401


# ------------------------------------------------------------------ a failed job's console line
TQDM_AFTER_TRACEBACK = (
    "loading model\n"
    "Traceback (most recent call last):\n"
    '  File "train.py", line 3, in <module>\n'
    "    main()\n"
    "ValueError: results/sft/arith/bin0.jsonl: line 4: 'completion' is empty\n"
    "Map:   0%|          | 0/200 [00:00<?, ? examples/s]\r"
    "Map:  50%|#####     | 100/200 [00:00<00:00, 4012.3 examples/s]\r"
    "Map: 100%|##########| 200/200 [00:00<00:00, 4102.7 examples/s]\n"
    "Generating train split: 200 examples [00:00, 12034.55 examples/s]\n"
    " 40%|####      | 2/5 [00:01<00:02,  1.21it/s]\r 60%|######    | 3/5 [00:02<00:01,  1.19s/it]\n"
)


def test_error_line_skips_tqdm_output_after_a_traceback(tmp_path):
    from crossdiff.runtime.failures import error_line

    log = tmp_path / "bin0.log"
    log.write_text(TQDM_AFTER_TRACEBACK)
    assert error_line(log) == "ValueError: results/sft/arith/bin0.jsonl: line 4: 'completion' is empty"


def test_error_line_of_a_traceback_glued_to_an_unfinished_bar(tmp_path):
    """A crash mid-bar: the traceback starts on the bar's line (no newline after the last update)."""
    from crossdiff.runtime.failures import error_line

    log = tmp_path / "x.log"
    log.write_text("Map:  50%|#####     | 5/10 [00:00<00:00, 123.4 examples/s]Traceback (most recent call last):\n"
                   '  File "x.py", line 1, in <module>\nKeyError: \'answer\'\n'
                   "\r 10%|#         | 1/10 [00:00<00:05,  1.7it/s]")
    assert error_line(log) == "KeyError: 'answer'"


def test_error_line_without_a_traceback_is_the_last_line_that_is_not_a_bar(tmp_path):
    from crossdiff.runtime.failures import error_line

    log = tmp_path / "x.log"
    log.write_text("step 1\nKilled: out of memory at step 3\n"
                   "100%|##########| 5/5 [00:03<00:00,  1.52it/s]\n"
                   "Loading checkpoint shards: 100%|##########| 2/2\n")
    assert error_line(log) == "Killed: out of memory at step 3"
    log.write_text("only progress\r 50%|#####     | 1/2 [00:01<00:01,  1.00s/it]")
    assert error_line(log) == "only progress"
    log.write_text("[00:05] a line that merely starts with a time\n")
    assert error_line(log) == "[00:05] a line that merely starts with a time"
