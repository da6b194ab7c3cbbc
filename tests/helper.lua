-- Loaded by busted before every spec (see cmake/tests.cmake): puts
-- tests/support on package.path for the shared spec helpers.
local src = os.getenv("GENEVA_SOURCE_DIR") or "."
package.path = src .. "/tests/support/?.lua;" .. package.path
