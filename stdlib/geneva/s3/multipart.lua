-- geneva.s3.multipart: put_file above the threshold. CreateMultipartUpload,
-- one UploadPart per range of the file (each signed with its own SHA-256,
-- streamed from the file), CompleteMultipartUpload. Any failure, an
-- interrupt included, aborts the upload before the error propagates, so no
-- incomplete upload is left to cost storage.
local errors = require "geneva.errors"
local xml = require "geneva.s3.xml"

local M = {}

local function upload_id_of(body)
  local root = xml.parse(body)
  local id = root and root.name == "InitiateMultipartUploadResult" and xml.text(root, "UploadId")
  if type(id) ~= "string" or id == "" or #id > 1024 or id:find("[%c%s]") then
    errors.raise("unavailable", "s3 put_file: no usable UploadId in the CreateMultipartUpload answer")
  end
  return id
end

-- part size for size bytes: the client's, grown so there are at most
-- MAX_PARTS parts
local function part_size_for(client, size)
  local s3 = require "geneva.s3"
  local ps = client.part_size
  while (size + ps - 1) // ps > s3.MAX_PARTS do ps = ps * 2 end
  return ps
end

function M.upload(client, key, path, size, opts, util)
  local _, _, body = client:_call { method = "POST", key = key, query = { uploads = "" },
                                    headers = opts.content_type and { ["Content-Type"] = opts.content_type } or nil }
  local id = upload_id_of(body)
  local done = false
  -- aborts on any error (a to-be-closed value sees the error on its way out)
  local _ <close> = setmetatable({}, { __close = function(_, err)
    if err ~= nil and not done then
      pcall(client.abort_multipart_upload, client, key, id)
    end
  end })
  local ps = part_size_for(client, size)
  local parts = {}
  local n = 0
  for offset = 0, size - 1, ps do
    n = n + 1
    local len = math.min(ps, size - offset)
    local hash = util.sha256_range(path, offset, len)
    local _, h = client:_call { method = "PUT", key = key,
      query = { partNumber = tostring(n), uploadId = id },
      body_file = path, body_file_offset = offset, body_file_length = len, payload_hash = hash }
    local etag = util.etag_of(h)
    if not etag then errors.raise("unavailable", "s3 put_file: part %d of '%s' answered without a usable ETag", n, key) end
    parts[n] = ("<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>"):format(n, xml.escape(etag))
  end
  local doc = "<CompleteMultipartUpload>" .. table.concat(parts) .. "</CompleteMultipartUpload>"
  local headers = {}
  if opts.if_none_match then headers["If-None-Match"] = "*" end
  local _, h, answer = client:_call { method = "POST", key = key, query = { uploadId = id },
                                      body = doc, headers = headers }
  -- S3 may answer 200 and put an <Error> in the body (a failure after the
  -- headers went out): that is a failure too
  -- (moto names the root CompleteMultipartUploadResponse)
  local root = xml.parse(answer)
  if not root or not (root.name == "CompleteMultipartUploadResult"
                      or root.name == "CompleteMultipartUploadResponse") then
    local e = require("geneva.s3.request").parse_error(answer)
    errors.throw(e.code == "PreconditionFailed" and "conflict" or "unavailable",
      ("s3 put_file s3://%s/%s: CompleteMultipartUpload failed: %s"):format(
        client.bucket, key, e.code or "unreadable answer"), { s3_code = e.code, bucket = client.bucket, key = key })
  end
  done = true
  return { etag = util.etag_of(h) or require("geneva.s3.request").clean(xml.text(root, "ETag"), 128),
           size = size, parts = n, upload_id = id }
end

return M
