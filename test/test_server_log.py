"""``_server/log.py``: a server's output, read in pieces, never holding the server up.

A real file in a private temp dir stands for a server's log, written to
as the server would (appended, a line at a time or less).  Each launch
begins at its own offset; a search sees only complete lines (a line
still being written must not match half-way); ``text(since)``, ``end()``
and ``tail()`` answer from the last MiB kept in memory once the file has
gone with its directory; the excerpt of a failed start shows this
launch's head and tail without colour codes, with probe lines folded and
a marker where lines were left out.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import unittest
from unittest import mock

from harness._server import log as log_module
from harness._server.log import ServerLog, clean, fold
from harness._wait import Deadline
from harness.errors import HarnessError, WaitTimeout


class ServerLogTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="h-log-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.log = ServerLog()
        self.log.create(self.directory)

    def write(self, text: str) -> None:
        """Append ``text`` as the server does."""
        assert self.log.path is not None
        with open(self.log.path, "ab") as f:
            f.write(text.encode("utf-8"))

    def launch(self, text: str = "") -> None:
        """A new launch of the server, which writes ``text``."""
        fd = self.log.open_for_launch()
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)

    def remove_file(self) -> None:
        """The file goes with the server's directory (after ``remember``)."""
        self.log.remember()
        assert self.log.path is not None
        os.unlink(self.log.path)
        self.assertFalse(self.log.exists)


class LaunchOffsetTest(ServerLogTestCase):
    def test_the_log_is_private_and_empty_at_first(self) -> None:
        assert self.log.path is not None
        self.assertEqual(os.stat(self.log.path).st_mode & 0o777, 0o600)
        self.assertEqual((self.log.size(), self.log.end(), self.log.text()), (0, 0, ""))

    def test_each_launch_begins_where_the_last_one_ended(self) -> None:
        self.launch("first launch\n")
        self.assertEqual((self.log.offset, self.log.launch_id), (0, 1))
        self.launch("second launch\n")
        self.assertEqual((self.log.offset, self.log.launch_id), (len("first launch\n"), 2))
        self.assertEqual(self.log.text(self.log.offset), "second launch\n")
        self.assertEqual(self.log.excerpt(10), ["second launch"])

    def test_a_note_is_a_harness_line(self) -> None:
        self.log.note("relaunching on a new port")
        self.assertEqual(self.log.text(), "[harness] relaunching on a new port\n")


class FindTest(ServerLogTestCase):
    READY = re.compile(r"ready on (\d+)")

    def test_a_line_still_being_written_does_not_match(self) -> None:
        self.write("ready on 40")
        self.assertEqual(self.log.find(self.READY, 0), (None, 0))
        self.write("01\n")
        match, after = self.log.find(self.READY, 0)
        assert match is not None
        self.assertEqual(match.group(1), "4001")  # not the "40" of the half line
        self.assertEqual(after, len("ready on 4001\n"))

    def test_the_search_starts_at_the_offset_given(self) -> None:
        self.write("ready on 1\nnoise\nready on 2\ntail")
        first, after = self.log.find(self.READY, 0)
        assert first is not None
        second, end = self.log.find(self.READY, after)
        assert second is not None
        self.assertEqual((first.group(1), second.group(1)), ("1", "2"))
        self.assertEqual(end, len("ready on 1\nnoise\nready on 2\n"))
        self.assertEqual(self.log.find(self.READY, end), (None, end))

    def test_offsets_count_bytes_not_characters(self) -> None:
        self.write("d\u00e9marr\u00e9: ready on 7\nready on 8\n")
        _, after = self.log.find(self.READY, 0)
        self.assertEqual(after, len("d\u00e9marr\u00e9: ready on 7\n".encode("utf-8")))
        match, _ = self.log.find(self.READY, after)
        assert match is not None
        self.assertEqual(match.group(1), "8")

    def test_nothing_is_found_once_the_file_is_gone(self) -> None:
        self.write("ready on 1\n")
        self.remove_file()
        self.assertEqual(self.log.find(self.READY, 0), (None, 0))


class WaitForTest(ServerLogTestCase):
    READY = re.compile("ready")

    def test_a_line_already_there_is_returned(self) -> None:
        self.write("booting\nready\n")
        match, after = self.log.wait_for(self.READY, 0, Deadline(30), ended=lambda s: False,
                                         name="api", state=lambda: "is running")
        self.assertEqual((match.group(0), after), ("ready", len("booting\nready\n")))

    def test_an_exit_ends_the_wait_with_the_last_lines(self) -> None:
        self.write("booting\nTraceback: boom\n")
        with self.assertRaises(HarnessError) as caught:
            self.log.wait_for(self.READY, 0, Deadline(30), ended=lambda s: True, name="api",
                              state=lambda: "exited with code 1")
        self.assertNotIsInstance(caught.exception, WaitTimeout)
        text = str(caught.exception)
        self.assertIn("server 'api' exited with code 1 while waiting for 'ready'", text)
        self.assertIn("    Traceback: boom", text)

    def test_the_deadline_ends_the_wait_with_a_timeout(self) -> None:
        self.write("booting\n")
        with self.assertRaises(WaitTimeout) as caught:
            self.log.wait_for(self.READY, 0, Deadline(0.0), ended=lambda s: False, name="api",
                              state=lambda: "is running")
        self.assertIn("'ready' did not appear in the output of server 'api'",
                      str(caught.exception))
        self.assertIn("    booting", str(caught.exception))


class AfterTheFileIsGoneTest(ServerLogTestCase):
    def test_text_and_end_answer_from_what_was_kept(self) -> None:
        self.write("abc\nd\u00e9f\n")
        end = self.log.end()
        self.assertEqual(end, len("abc\nd\u00e9f\n".encode("utf-8")))
        self.remove_file()
        self.assertEqual(self.log.end(), end)
        self.assertEqual(self.log.text(4), "d\u00e9f\n")
        self.assertEqual(self.log.text(end), "")

    def test_only_the_last_part_is_kept_and_offsets_still_hold(self) -> None:
        with mock.patch.object(log_module, "KEPT_OUTPUT", 8):
            self.write("0123456789abcdef\n")  # 17 bytes: the last 8 are kept
            self.remove_file()
        self.assertEqual(self.log.kept_from, 9)
        self.assertEqual(self.log.end(), 17)
        self.assertEqual(self.log.text(12), "cdef\n")  # byte 12 on, as in the file
        self.assertEqual(self.log.text(0), "9abcdef\n")  # what was kept of it

    def test_the_tail_comes_from_what_was_kept(self) -> None:
        self.write("one\ntwo\nthree\n")
        self.remove_file()
        self.assertEqual(self.log.tail(2), "two\nthree")

    def test_the_excerpt_comes_from_what_was_kept(self) -> None:
        self.write("one\ntwo\n")
        self.remove_file()
        self.assertEqual(self.log.excerpt(5), ["one", "two"])


class TailAndExcerptTest(ServerLogTestCase):
    def test_the_tail_is_the_last_lines(self) -> None:
        self.write("".join(f"line {n}\n" for n in range(10)))
        self.assertEqual(self.log.tail(3), "line 7\nline 8\nline 9")
        self.assertEqual(self.log.tail(0), "")
        self.assertEqual(self.log.tail(100).splitlines()[0], "line 0")

    def test_a_long_output_is_cut_in_the_middle_with_a_marker(self) -> None:
        self.launch("".join(f"step {word}\n" for word in "abcdefghijklmnopqrst"))  # 20 lines
        self.assertEqual(self.log.excerpt(3), [
            "step a", "step b", "step c", "[... 14 line(s) left out ...]",
            "step r", "step s", "step t"])

    def test_a_short_output_is_shown_whole(self) -> None:
        self.launch("a\nb\nc\nd\n")
        self.assertEqual(self.log.excerpt(2), ["a", "b", "c", "d"])

    def test_repeated_probe_lines_are_folded(self) -> None:
        probes = "".join(f"127.0.0.1 - - [12:00:{n:02d}] \"GET /health\" 503\n"
                         for n in range(12))
        self.launch("starting\n" + probes + "Traceback: the real error\n")
        self.assertEqual(self.log.excerpt(10), [
            "starting", '127.0.0.1 - - [12:00:00] "GET /health" 503',
            "[... 11 more line(s) like the one above]", "Traceback: the real error"])

    def test_colour_codes_are_removed(self) -> None:
        self.launch("\x1b[31mERROR\x1b[0m: \x1b[1mno\x1b[0m\n")
        self.assertEqual(self.log.excerpt(5), ["ERROR: no"])


class CleanTest(unittest.TestCase):
    def test_colour_and_cursor_codes_are_removed(self) -> None:
        self.assertEqual(clean("\x1b[1;32mok\x1b[0m \x1b[2Kdone\x1b[?25l"), "ok done")

    def test_other_text_is_left_alone(self) -> None:
        text = "[12:00] price: $5 [ok] \u00e9"
        self.assertEqual(clean(text), text)


class FoldTest(unittest.TestCase):
    def test_three_lines_alike_but_for_numbers_become_one_and_a_count(self) -> None:
        self.assertEqual(fold(["GET /h 200 1ms", "GET /h 200 3ms", "GET /h 503 12ms", "end"]),
                         ["GET /h 200 1ms", "[... 2 more line(s) like the one above]", "end"])

    def test_two_lines_alike_are_left(self) -> None:
        lines = ["try 1", "try 2", "done"]
        self.assertEqual(fold(lines), lines)

    def test_lines_that_differ_in_words_are_left(self) -> None:
        lines = ["GET /a 200", "GET /b 200", "GET /c 200"]
        self.assertEqual(fold(lines), lines)

    def test_least_sets_how_long_a_run_must_be(self) -> None:
        self.assertEqual(fold(["x 1", "x 2"], least=2),
                         ["x 1", "[... 1 more line(s) like the one above]"])
        self.assertEqual(fold(["x 1", "x 2", "x 3"], least=4), ["x 1", "x 2", "x 3"])

    def test_separate_runs_fold_separately(self) -> None:
        self.assertEqual(fold(["a 1", "a 2", "a 3", "b", "a 4", "a 5", "a 6"]), [
            "a 1", "[... 2 more line(s) like the one above]", "b",
            "a 4", "[... 2 more line(s) like the one above]"])


if __name__ == "__main__":
    unittest.main()
