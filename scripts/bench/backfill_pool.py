#!/usr/bin/env python3
"""The hand-written baseline for scripts/bench/backfill: a multiprocessing
pool computing a UDF over (id, text) rows read from a SQLite file, writing
the results into a SQLite table in one transaction.

    backfill_pool.py SRC_DB OUT_DB trivial|heavy WORKERS [CHUNK]

Prints one line: "<rows> <seconds> <sum of the values>". Python 3 stdlib only.
"""
import multiprocessing
import sqlite3
import sys
import time


def trivial(text):
    return len(text)


def heavy(text):
    # the same ~2000 arithmetic operations as backfill_common.lua's heavy
    h = len(text)
    for k in range(1, 501):
        h = (h * 31 + k) % 1000003
    return h


UDFS = {"trivial": trivial, "heavy": heavy}
FN = None


def init(name):
    global FN
    FN = UDFS[name]


def work(chunk):
    fn = FN
    return [(i, fn(t)) for i, t in chunk]


def chunks(path, size):
    src = sqlite3.connect(path)
    cur = src.execute("SELECT id, text FROM data ORDER BY id")
    while True:
        rows = cur.fetchmany(size)
        if not rows:
            break
        yield rows
    src.close()


def main():
    src, out, name, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
    t0 = time.perf_counter()
    db = sqlite3.connect(out)
    db.execute("CREATE TABLE results(id INTEGER PRIMARY KEY, value INTEGER)")
    n = total = 0
    with multiprocessing.Pool(workers, initializer=init, initargs=(name,)) as pool:
        with db:  # one transaction
            for res in pool.imap(work, chunks(src, size)):
                db.executemany("INSERT INTO results(id, value) VALUES (?, ?)", res)
                n += len(res)
                total += sum(v for _, v in res)
    db.close()
    print(n, time.perf_counter() - t0, total)


if __name__ == "__main__":
    main()
