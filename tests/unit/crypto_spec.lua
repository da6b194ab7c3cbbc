-- memcheck
-- geneva.crypto: SHA-256 and HMAC-SHA256 against published vectors
-- (FIPS 180-2 examples, RFC 4231 test cases 1, 2 and 6).
local crypto = require "geneva.crypto"

local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

describe("geneva.crypto", function()
  it("sha256 gives raw bytes by default and hex on request", function()
    local empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert.equal(empty, crypto.sha256("", "hex"))
    assert.equal(unhex(empty), crypto.sha256(""))
    assert.equal(32, #crypto.sha256("abc"))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      crypto.sha256("abc", "hex"))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      crypto.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "hex"))
  end)

  it("hmac_sha256 matches RFC 4231", function()
    assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      crypto.hmac_sha256(("\x0b"):rep(20), "Hi There", "hex"))
    assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      crypto.hmac_sha256("Jefe", "what do ya want for nothing?", "hex"))
    -- a key longer than the block size is hashed first
    assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      crypto.hmac_sha256(("\xaa"):rep(131),
        "Test Using Larger Than Block-Size Key - Hash Key First", "hex"))
    assert.equal(crypto.hmac_sha256("k", "m", "hex"), crypto.hex(crypto.hmac_sha256("k", "m")))
  end)

  it("takes binary strings and an empty key", function()
    assert.equal(32, #crypto.hmac_sha256("", ""))
    assert.equal(crypto.sha256("a\0b", "hex"), crypto.hex(crypto.sha256("a\0b")))
    assert.equal("00ff10", crypto.hex("\0\255\16"))
  end)

  it("raises on misuse", function()
    assert.has_error(function() crypto.sha256(nil) end)
    assert.has_error(function() crypto.sha256("x", "base64") end)
    assert.has_error(function() crypto.hmac_sha256("k") end)
  end)
end)
