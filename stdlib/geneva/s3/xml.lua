-- geneva.s3.xml: the little XML S3 answers with (lists, errors, upload
-- ids). Server bytes are untrusted: the parser is bounded (depth, element
-- count, input size) and returns nil, msg on anything it does not accept
-- instead of raising. Attributes and namespaces are skipped; text is
-- unescaped (the five entities, numeric references, CDATA).
local xml = {}

xml.MAX_DEPTH = 32
xml.MAX_ELEMENTS = 200000
xml.MAX_BYTES = 64 * 1024 * 1024

local entities = { lt = "<", gt = ">", amp = "&", quot = '"', apos = "'" }

local function unescape(s)
  if not s:find("&", 1, true) then return s end
  local bad
  s = s:gsub("&(#?[%w]+);", function(e)
    if entities[e] then return entities[e] end
    local n = e:match("^#x(%x+)$")
    n = n and tonumber(n, 16) or tonumber(e:match("^#(%d+)$") or "")
    if n and n < 0x110000 and not (n >= 0xD800 and n <= 0xDFFF) then return utf8.char(n) end
    bad = e
  end)
  if bad then return nil, "unknown entity &" .. bad .. ";" end
  return s
end

--[[
xml.parse(s) -> root | nil, msg
A node is {name = "Key" (prefix stripped), text = "..." (its own text,
concatenated), [i] = child nodes in order}.
]]
function xml.parse(s)
  if type(s) ~= "string" then return nil, "not a string" end
  if #s > xml.MAX_BYTES then return nil, "document too large" end
  local pos, stack, root, count = 1, {}, nil, 0
  local texts = {}   -- per depth: array of text pieces
  local function add_text(piece)
    local d = #stack
    if d == 0 then
      if piece:find("%S") then return nil, "text outside the root element" end
      return true
    end
    local t = texts[d]
    t[#t + 1] = piece
    return true
  end
  while pos <= #s do
    local lt = s:find("<", pos, true)
    if not lt then
      local ok, err = add_text(s:sub(pos))
      if not ok then return nil, err end
      break
    end
    if lt > pos then
      local txt, err = unescape(s:sub(pos, lt - 1))
      if not txt then return nil, err end
      local ok, err2 = add_text(txt)
      if not ok then return nil, err2 end
    end
    if s:sub(lt, lt + 3) == "<!--" then
      local e = s:find("-->", lt + 4, true)
      if not e then return nil, "unterminated comment" end
      pos = e + 3
    elseif s:sub(lt, lt + 8) == "<![CDATA[" then
      local e = s:find("]]>", lt + 9, true)
      if not e then return nil, "unterminated CDATA" end
      local ok, err = add_text(s:sub(lt + 9, e - 1))
      if not ok then return nil, err end
      pos = e + 3
    elseif s:sub(lt, lt + 1) == "<?" then
      local e = s:find("?>", lt + 2, true)
      if not e then return nil, "unterminated declaration" end
      pos = e + 2
    elseif s:sub(lt, lt + 1) == "<!" then
      return nil, "DOCTYPE and other declarations are not accepted"
    else
      local gt = s:find(">", lt + 1, true)
      if not gt then return nil, "unterminated tag" end
      local tag = s:sub(lt + 1, gt - 1)
      pos = gt + 1
      local closing, name, rest = tag:match("^(/?)([%w_:%.%-]+)(.*)$")
      if not name then return nil, "malformed tag" end
      local local_name = name:match(":([^:]+)$") or name
      if closing == "/" then
        local top = stack[#stack]
        if not top or top.name ~= local_name or rest:find("%S") then
          return nil, "mismatched </" .. local_name:sub(1, 64) .. ">"
        end
        top.text = table.concat(texts[#stack])
        texts[#stack] = nil
        stack[#stack] = nil
        if #stack == 0 then root = top end
      else
        if root then return nil, "more than one root element" end
        count = count + 1
        if count > xml.MAX_ELEMENTS then return nil, "too many elements" end
        if #stack >= xml.MAX_DEPTH then return nil, "nesting too deep" end
        local node = { name = local_name }
        local parent = stack[#stack]
        if parent then parent[#parent + 1] = node end
        if rest:sub(-1) == "/" then
          node.text = ""
          if not parent then root = node end
        else
          stack[#stack + 1] = node
          texts[#stack] = {}
        end
      end
    end
  end
  if #stack > 0 then return nil, "unclosed <" .. stack[#stack].name:sub(1, 64) .. ">" end
  if not root then return nil, "no root element" end
  return root
end

-- xml.child(node, name) -> the first child called name, or nil
function xml.child(node, name)
  for _, c in ipairs(node) do
    if c.name == name then return c end
  end
end

-- xml.children(node, name) -> array of the children called name
function xml.children(node, name)
  local out = {}
  for _, c in ipairs(node) do
    if c.name == name then out[#out + 1] = c end
  end
  return out
end

-- xml.text(node, name) -> the text of the first child called name, or nil
function xml.text(node, name)
  local c = xml.child(node, name)
  return c and c.text
end

-- xml.escape(s) -> s with & < > " ' escaped, for the bodies we send
function xml.escape(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                         ['"'] = "&quot;", ["'"] = "&apos;" }))
end

return xml
