-- geneva.crypto: SHA-256 and HMAC-SHA256 over strings (C in
-- bindings/crypto.c, over a dlopen'd libcrypto), for request signing. Files
-- are hashed by geneva.fs (sha256_file), which streams them.
local core = require "geneva.crypto.core"

return {
  -- sha256(s [, "raw"|"hex"]) -> 32 raw bytes (default) or 64 hex digits
  sha256 = core.sha256,
  -- hmac_sha256(key, msg [, "raw"|"hex"]) -> 32 raw bytes (default) or hex
  hmac_sha256 = core.hmac_sha256,
  -- hex(s) -> lowercase hex of the bytes of s
  hex = core.hex,
}
