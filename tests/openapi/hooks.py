"""Schemathesis hooks for wvs's API (loaded with SCHEMATHESIS_HOOKS=hooks).

A plugin upload's body is a WebAssembly module, which no JSON Schema can describe: the
document says `application/wasm`, and this serializer tells schemathesis what such a body
is. Where the generated value is binary data (what the document allows), it sends a real
module following the ABI (the path is in WVS_TEST_WASM), so uploads the document allows are
accepted; any other value (a negative case) is sent as its JSON text, which is not a module
and must be refused.
"""
import json
import os

import schemathesis

with open(os.environ["WVS_TEST_WASM"], "rb") as f:
    MODULE = f.read()


@schemathesis.serializer("application/wasm", "application/octet-stream")
def wasm(ctx, value):
    if isinstance(value, (bytes, bytearray, str)) or type(value).__name__ == "Binary":
        return MODULE
    return json.dumps(value).encode()
