#!/usr/bin/env python3
"""Drives the geneva REPL through a pseudo-terminal, as a person would.

usage: repl_pty.py GENEVA_BIN
Checks a multi-line function, `=expr`, a pretty-printed table, an error that
does not end the session, Ctrl-C at the prompt and at a `>>` continuation,
Tab completion, compact printing of objects, job records, geneva.null and
long arrays, a background
job that draws nothing at the prompt, and the history file.
Prints 'N passed, N failed' and exits non-zero on failure.
"""
import json
import re
import os
import pty
import select
import sys
import tempfile
import time

BIN = sys.argv[1]


def read_until(fd, needle, timeout=10.0, then=None):
    """Reads until needle appears (and, if given, `then` after it)."""
    buf = b""
    end = time.time() + timeout

    def done():
        i = buf.find(needle.encode())
        return i >= 0 and (then is None or then.encode() in buf[i + len(needle):])

    while not done():
        left = end - time.time()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {needle!r}; got {buf!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


def main():
    tmp = tempfile.mkdtemp()
    hist = os.path.join(tmp, "history")
    env = dict(os.environ, GENEVA_HISTORY=hist, TERM="dumb")
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(BIN, [BIN], env)
    passed = failed = 0

    def check(name, cond, detail=""):
        nonlocal passed, failed
        if cond:
            passed += 1
        else:
            failed += 1
            print(f"FAIL: {name} {detail}")

    def send(line):
        os.write(fd, line.encode())

    out = read_until(fd, "> ")
    check("banner", "geneva" in out, out)
    send("function twice(x)\n")
    out = read_until(fd, ">> ")
    send("  return x * 2\n")
    read_until(fd, ">> ")
    send("end\n")
    read_until(fd, "> ")
    # Each input waits for the next prompt: libedit flushes type-ahead when
    # it switches the terminal mode, as a person would never notice.
    def step(line, expect):
        send(line)
        return read_until(fd, expect, then="> ")

    out = step("=twice(21)\n", "42")
    check("multi-line function", "42" in out, out)
    out = step("=1+1\n", "2\r\n")
    check("=expr", "2" in out, out)
    out = step("{a = {b = 1}}\n", "}")
    check("pretty table", "b = 1" in out, out)
    out = step("error('oops')\n", "oops")
    check("error keeps the session", "oops" in out, out)
    send("1 +")    # Ctrl-C while typing drops the line
    time.sleep(0.2)
    send("\x03")
    read_until(fd, "> ")
    out = step("=3*3\n", "9")
    check("Ctrl-C at the prompt", "9" in out and "interrupted" not in out, out)
    # Ctrl-C at `>>` drops the statement being continued, as lua does
    send("function dropped()\n")
    read_until(fd, ">> ")
    send("  return 1\n")
    read_until(fd, ">> ")
    send("\x03")
    out = read_until(fd, "> ")
    check("Ctrl-C at >> gives a fresh > prompt", out.rstrip().endswith(">") and ">>" not in out, repr(out))
    out = step("=dropped == nil and 'gone' or 'kept'\n", "gone")
    check("Ctrl-C at >> dropped the pending lines", "gone" in out, out)
    out = step("=2+5\n", "7")
    check("the REPL works after Ctrl-C at >>", "7" in out, out)

    # Tab completes globals, fields and methods (libedit redraws the line)
    step("geneva = require 'geneva'\n", "")
    send("=type(geneva.local_cl\t")
    read_until(fd, "local_cluster")
    out = step(")\n", "function")
    check("Tab completes a field", "function" in out, out)
    send("geneva.co\t")        # the common prefix first, then the list
    read_until(fd, "geneva.con")
    send("\t")
    # the list, then the line redrawn under it: wait for both, or the
    # prompt of the redraw passes for the one after Ctrl-C below
    out = read_until(fd, "geneva.connect", then="> geneva.con")
    check("a second Tab lists the candidates", "geneva.context" in out, out)
    send("\x03")               # and the line goes
    read_until(fd, "\n> ")
    send("=pri\t")
    read_until(fd, "print")
    out = step("('tab')\n", "tab")
    check("Tab completes a global", "tab" in out, out)
    # Ctrl-C inside a context tears down what that statement created, and
    # only that: a context entered by an earlier statement stays.
    workers = ("=#io.popen(\"pgrep -P \" .. require('geneva.proc').self().pid .. "
               "\" -f '^[^ ]*geneva worker --stdio$'\"):read('a'):gsub('%d+', '')\n")
    step("db = geneva.connect(%r)\n" % os.path.join(tmp, "db"), "")
    # A background job makes progress while the REPL sits idle at its prompt
    step("t = db:create_table('docs', (function() local r = {} for i = 1, 4000 do "
         "r[i] = {id = i} end return r end)())\n", "")
    step("t:add_columns{ s = geneva.udf{ data_type = 'int64', fn = function(id) "
         "local x = os.clock() + 0.0003 while os.clock() < x do end return id end } }\n", "")
    step("j = t:backfill_async('s', { batch_size = 200 })\n", "")
    time.sleep(2.0)            # nobody types: only the prompt is up
    jobs = os.path.join(tmp, "db", "_geneva", "jobs")
    recs = [json.load(open(os.path.join(jobs, f))) for f in os.listdir(jobs) if f.endswith(".json")]
    done = recs[0]["tasks"]["done"] if recs else -1
    check("a background job progresses at an idle prompt", done > 0, str(recs and recs[0].get("status")))
    send("=j:wait().status\n")
    out = read_until(fd, "DONE", timeout=60, then="> ")
    check("and ends DONE", "DONE" in out, out)
    out = step("=j\n", "rows>")
    check("a job prints as one line", re.search(r"<geneva\.Job \S+ DONE docs\.s 4000/4000 rows>\r\n", out), out)
    out = step("=db:jobs()\n", "ago>")
    check("job records print a line each",
          re.search(r"\{\r\n  <geneva\.JobRecord \S+ DONE docs\.s 4000/4000 rows, \d+[smhd] ago>,\r\n\}", out)
          and "created_at" not in out, out)
    out = step("=geneva.null, {1, geneva.null}\n", "}")
    check("geneva.null prints as itself", "geneva.null\t{1, geneva.null}" in out and "userdata" not in out, out)
    out = step("=t\n", "columns)>")
    check("a table prints as one line", re.search(r"<geneva\.Table docs v\d+ \(2 columns\)>", out), out)
    out = step("=t:to_rows()\n", "more")
    check("a long array is cut", "… 3990 more" in out and out.count("id = ") == 10, out)
    out = step("=t:schema()\n", "udf ")
    check("a schema prints a line per column, no bytecode",
          "geneva.Schema (2 columns)" in out and "code" not in out, out)
    out = step("kept = geneva.local_cluster{ workers = 1 }:enter()\n", "")
    send("geneva.local_cluster{ workers = 2 }(function() geneva.time.sleep(20) end)\n")
    time.sleep(1.5)
    for attempt in range(3):   # a key sent during a terminal mode switch can be lost
        send("\x03")
        try:
            out = read_until(fd, "interrupted", timeout=5, then="> ")
            break
        except AssertionError:
            if attempt == 2:
                raise
    out = step(workers, "\n")
    check("Ctrl-C tears down the statement's context only", out.split()[-2:-1] == ["1"], out)
    step("kept:exit()\n", "")
    out = step(workers, "\n")
    check("a kept context exits when asked", out.split()[-2:-1] == ["0"], out)

    # Ctrl-D ends the session. A loaded machine can still lose a key typed
    # while libedit switches terminal modes, so it is sent again if needed.
    status = None
    for _ in range(5):
        send("\x04")
        end = time.time() + 4
        while time.time() < end:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            try:
                select.select([fd], [], [], 0.1)[0] and os.read(fd, 4096)
            except OSError:
                pass
        if status is not None:
            break
    if status is None:
        os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    check("exit status 0", os.WEXITSTATUS(status) == 0, str(status))
    text = open(hist).read() if os.path.exists(hist) else ""
    check("history file", "twice(21)" in text and "1+1" in text, repr(text))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
