-- geneva.context.elf: what a Linux executable needs from its host, read from its
-- ELF section headers in pure Lua (string.unpack): machine, DT_NEEDED
-- libraries, the GLIBC_x.y versions it references (.gnu.version_r) and the
-- ones a library defines (.gnu.version_d). Used by ship_host packaging and
-- the worker-side host check (geneva.context.manifest).
local M = {}

local SHT_DYNAMIC, SHT_VERDEF, SHT_VERNEED = 6, 0x6ffffffd, 0x6ffffffe
local DT_NEEDED = 1

-- e_machine -> `uname -m` spelling
M.MACHINES = {
  [3] = "i686", [40] = "armv7l", [62] = "x86_64", [183] = "aarch64", [243] = "riscv64",
  [22] = "s390x", [8] = "mips", [2] = "sparc", [43] = "sparc64",
}

-- compare "2.34" with "2.4": numeric, component by component; -1, 0, 1
function M.version_cmp(a, b)
  local pa, pb = {}, {}
  for n in tostring(a):gmatch("%d+") do pa[#pa + 1] = tonumber(n) end
  for n in tostring(b):gmatch("%d+") do pb[#pb + 1] = tonumber(n) end
  for i = 1, math.max(#pa, #pb) do
    local x, y = pa[i] or 0, pb[i] or 0
    if x ~= y then return x < y and -1 or 1 end
  end
  return 0
end

--[[
M.parse(bytes) -> info | nil, msg
info: {class = 32|64, machine = "x86_64"|..., needed = {sonames...},
versions_needed = {["libc.so.6"] = {"GLIBC_2.2.5", ...}, ...},
versions_defined = {"GLIBC_2.2.5", ...}}. Never raises on bad input.
]]
function M.parse(data)
  local ok, res = pcall(function()
    if data:sub(1, 4) ~= "\127ELF" then return nil, "not an ELF file" end
    local class, endian = data:byte(5), data:byte(6)
    if (class ~= 1 and class ~= 2) or (endian ~= 1 and endian ~= 2) then return nil, "bad ELF header" end
    local e = endian == 1 and "<" or ">"
    local W = class == 2 and "I8" or "I4"
    local machine, shoff, shentsize, shnum
    do
      local fmt = e .. "I2I2I4" .. W .. W .. W .. "I4I2I2I2I2I2I2"
      local t = { string.unpack(fmt, data, 17) }
      machine, shoff, shentsize, shnum = t[2], t[6], t[11], t[12]
    end
    local info = { class = class == 2 and 64 or 32, machine = M.MACHINES[machine] or ("em" .. machine),
                   e_machine = machine, little_endian = endian == 1,
                   needed = {}, versions_needed = {}, versions_defined = {} }
    if machine == 21 then info.machine = endian == 1 and "ppc64le" or "ppc64" end
    if shoff == 0 or shnum == 0 then return info end
    local shfmt = e .. "I4I4" .. W .. W .. W .. W .. "I4I4" .. W .. W
    local sections = {}
    for i = 0, shnum - 1 do
      local _, ty, _, _, off, size, link, inf = string.unpack(shfmt, data, shoff + i * shentsize + 1)
      sections[i] = { type = ty, offset = off, size = size, link = link, info = inf }
    end
    local function str(sec_index, idx)
      local s = sections[sec_index]
      return (string.unpack("z", data, s.offset + idx + 1))
    end
    for _, s in pairs(sections) do
      if s.type == SHT_DYNAMIC then
        local dfmt = e .. (class == 2 and "i8I8" or "i4I4")
        local step = class == 2 and 16 or 8
        for off = s.offset, s.offset + s.size - step, step do
          local tag, val = string.unpack(dfmt, data, off + 1)
          if tag == 0 then break end
          if tag == DT_NEEDED then info.needed[#info.needed + 1] = str(s.link, val) end
        end
      elseif s.type == SHT_VERNEED then
        local off = s.offset
        for _ = 1, s.info do
          local _, cnt, file, aux, next_ = string.unpack(e .. "I2I2I4I4I4", data, off + 1)
          local lib = str(s.link, file)
          local list = info.versions_needed[lib] or {}
          info.versions_needed[lib] = list
          local a = off + aux
          for _ = 1, cnt do
            local _, _, _, name, anext = string.unpack(e .. "I4I2I2I4I4", data, a + 1)
            list[#list + 1] = str(s.link, name)
            if anext == 0 then break end
            a = a + anext
          end
          if next_ == 0 then break end
          off = off + next_
        end
      elseif s.type == SHT_VERDEF then
        local off = s.offset
        for _ = 1, s.info do
          local _, _, _, cnt, _, aux, next_ = string.unpack(e .. "I2I2I2I2I4I4I4", data, off + 1)
          if cnt > 0 then
            local name = string.unpack(e .. "I4", data, off + aux + 1)
            info.versions_defined[#info.versions_defined + 1] = str(s.link, name)
          end
          if next_ == 0 then break end
          off = off + next_
        end
      end
    end
    return info
  end)
  if not ok then return nil, "malformed ELF file: " .. tostring(res) end
  return res
end

-- M.max_glibc(names) -> "2.34" | nil: the highest GLIBC_x.y among names
function M.max_glibc(names)
  local best
  for _, n in ipairs(names or {}) do
    local v = n:match("^GLIBC_(%d+%.%d+[%.%d]*)$")
    if v and (not best or M.version_cmp(v, best) > 0) then best = v end
  end
  return best
end

-- M.glibc_min(info) -> "2.34" | nil: the highest GLIBC_ version the
-- binary references, from any library (libc, libm, ...)
function M.glibc_min(info)
  local all = {}
  for _, list in pairs(info.versions_needed) do
    for _, n in ipairs(list) do all[#all + 1] = n end
  end
  return M.max_glibc(all)
end

return M
