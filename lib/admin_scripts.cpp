// Lua scripts of the admin API. Every multi-key write is one EVAL so nothing
// is ever half-written: each script validates first, then writes, then
// appends the audit entry and publishes the invalidation, all atomically.
//
// Return contract: a table {code, payload...}; code is one of ScriptCode
// (admin_internal.h). Mutation scripts share
//   KEYS[1] = audit stream
//   ARGV[1] = actor, ARGV[2] = timestamp (iso8601), ARGV[3] = invalidate
//   channel, ARGV[4] = project id
// and script-specific KEYS[2..] / ARGV[5..] as documented per script. Key
// names always come from Layout on the C++ side; scripts never build them
// except from prefixes the C++ side passes in, and never in cluster mode.
//
// The constants below are script bodies; mutation_script() puts the prelude
// (audit(), pointer()) in front for the layout's mode:
// - standalone: KEYS[1] is the global stream (Layout::audit()); audit() also
//   writes the project's own stream, Layout::project_audit(pid), spelled
//   from KEYS[1] by project_audit_key() (a unit test keeps the two spellings
//   equal), and pointer() changes a gateway-key hash byok:apikey:<sha> here.
// - cluster (Layout::cluster()): every key a script touches is declared and
//   in the project's `{pid}` slot. KEYS[1] is the project's stream; the
//   global stream and the gateway-key hashes live in other slots, so the
//   script returns {reply, audited entries, pointer changes} and the C++ side
//   applies them after it as single-key steps (admin_internal.cpp mutate()).
#include "lib/admin_internal.h"
#include "lib/gateway.h"
#include "lib/project.h"

namespace byok::admin::detail {

namespace {

// A gateway-key hash (byok:apikey:<sha>) is changed only if it names the
// project: `drop` deletes it, `revoke` marks it revoked at `at`. The same
// function runs inside the standalone scripts and, in cluster mode, as the
// single-key follow-up kScriptPointer.
const std::string kPointerApply = R"lua(
local function pointer_apply(k, op, pid, at)
  if redis.call('HGET', k, 'project') ~= pid then return 0 end
  if op == 'drop' then return redis.call('DEL', k) end
  redis.call('HSET', k, 'revoked', '1', 'revoked_at', at)
  return 1
end
)lua";

// Every entry goes to the global stream and, with the same id, to the
// project's own stream, so `GET /audit?project=` reads only that project's
// entries. `global_only` is for the project's deletion, which removes its
// stream (a later project with the same id must not see this history).
// In cluster mode the entry goes to the project's stream (KEYS[1]) here and
// to the global one after the script (AUDITED: {id or '', fields...}).
const std::string kAuditBody = R"lua(
local AUDITED, POINTERS = {}, {}
local function project_audit_key()
  if CLUSTER then return KEYS[1] end
  return string.sub(KEYS[1], 1, -6) .. '{' .. ARGV[4] .. '}:audit'
end
local function audit(action, target, global_only)
  local f = {'actor', ARGV[1], 'action', action, 'project', ARGV[4],
             'target', target, 'at', ARGV[2]}
  if CLUSTER then
    local id = ''
    if not global_only then
      id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', '10000', '*', unpack(f))
    end
    local e = {id}
    for _, v in ipairs(f) do e[#e + 1] = v end
    AUDITED[#AUDITED + 1] = e
  else
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', '100000', '*', unpack(f))
    if not global_only then
      local pa = project_audit_key()
      local r = redis.pcall('XADD', pa, 'MAXLEN', '~', '10000', id, unpack(f))
      if type(r) == 'table' and r.err then
        redis.call('XADD', pa, 'MAXLEN', '~', '10000', '*', unpack(f))
      end
    end
  end
  if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
end
-- A gateway-key hash: `prefix` .. hash (Layout::apikey("")) here, or in
-- cluster mode (another slot) after the script, from POINTERS.
local function pointer(op, prefix, hash, at)
  if CLUSTER then
    POINTERS[#POINTERS + 1] = op
    POINTERS[#POINTERS + 1] = hash
    POINTERS[#POINTERS + 1] = at or ''
    return 1
  end
  return pointer_apply(prefix .. hash, op, ARGV[4], at or '')
end
)lua";

// The write of a gateway key's own hash at creation, shared by the
// standalone create script and the cluster-mode kScriptPointerCreate.
// ARGV[4] project id, [5] id, [6] label, [2] at, [8] scopes, [9] parent,
// [10] expires_at.
const std::string kPointerCreate = R"lua(
local function pointer_create(k)
  redis.call('HSET', k, 'project', ARGV[4], 'id', ARGV[5], 'label', ARGV[6],
    'created_at', ARGV[2], 'revoked', '0', 'scopes', ARGV[8], 'parent', ARGV[9],
    'expires_at', ARGV[10] or '')
end
)lua";

// KEYS[1] audit stream; ARGV[3] = "" (nothing to invalidate), ARGV[5]
// action, ARGV[6] target. → {0}.
const std::string kScriptAuditEntry = R"lua(
audit(ARGV[5], ARGV[6])
return {0}
)lua";

// byok_tier(t): the tier rule of byok_allowed() (project.h) as a Lua set
// generated from it, so the scripts check the tier atomically with the
// write and the rule still has one source. A missing tier (HGET → false)
// is not in the set.
std::string tier_rule_lua() {
    std::string set;
    for (Tier t : kTiers)
        if (byok_allowed(t)) set += "['" + std::string(tier_name(t)) + "']=true,";
    return "\nlocal function byok_tier(t)\n  return ({" + set + "})[t] == true\nend\n";
}
const std::string kTierRule = tier_rule_lua();

}  // namespace

// KEYS[2] project hash, KEYS[3] projects set (standalone; cluster mode adds
// the id before the script); ARGV[5] name, [6] tier, [7] fallback.
// → {1} created | {3} exists.
const std::string kScriptProjectCreate = R"lua(
if redis.call('EXISTS', KEYS[2]) == 1 then return {3} end
redis.call('HSET', KEYS[2], 'name', ARGV[5], 'tier', ARGV[6], 'fallback', ARGV[7],
  'created_at', ARGV[2], 'updated_at', ARGV[2])
if not CLUSTER then redis.call('SADD', KEYS[3], ARGV[4]) end
audit('project.create', ARGV[4])
return {1}
)lua";

// KEYS[2] project hash; ARGV[5..] field/value pairs (may be none).
// → {0, HGETALL project} | {2}.
const std::string kScriptProjectUpdate = R"lua(
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
local f = {'updated_at', ARGV[2]}
for i = 5, #ARGV - 1, 2 do f[#f + 1] = ARGV[i]; f[#f + 1] = ARGV[i + 1] end
redis.call('HSET', KEYS[2], unpack(f))
audit('project.update', ARGV[4])
return {0, redis.call('HGETALL', KEYS[2])}
)lua";

// KEYS[2] project hash, [3] apikeys hash, [4 .. 3+N] the project's other
// keys, named (hashes, and the usage and meter keys of every day they may
// still hold: no SCAN over the keyspace), N = ARGV[6]; standalone: [4+N] the
// projects set (cluster mode removes the id after the script). ARGV[5]
// gateway-key hash prefix (Layout::apikey("")). Deletes every gateway-key
// hash listed in the apikeys metadata (only if it names this project), the
// project's keys and its set membership.
// → {0, gateway keys listed} | {2}.
const std::string kScriptProjectDelete = R"lua(
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
local n = 0
local meta = redis.call('HGETALL', KEYS[3])
for i = 2, #meta, 2 do
  local ok, m = pcall(cjson.decode, meta[i])
  if ok and type(m) == 'table' and type(m.hash) == 'string' and string.match(m.hash, '^%x+$') then
    n = n + pointer('drop', ARGV[5], m.hash)
  end
end
local last = 3 + (tonumber(ARGV[6]) or 0)
redis.call('DEL', KEYS[2], KEYS[3], project_audit_key())
for i = 4, last, 100 do redis.call('DEL', unpack(KEYS, i, math.min(i + 99, last))) end
if not CLUSTER then redis.call('SREM', KEYS[last + 1], ARGV[4]) end
audit('project.delete', ARGV[4], true)
return {0, n}
)lua";

// KEYS[2] project hash, [3] apikeys hash, [4] gateway-key hash (standalone;
// cluster mode writes it before the script, kScriptPointerCreate); ARGV[5] id,
// [6] label, [7] metadata JSON, [8] scopes (space-separated, may be ""),
// [9] parent key id ("" when minted with an admin token), [10] expires_at
// (RFC 3339 or "", issue 14). A parent that is
// gone or revoked meanwhile mints nothing.
// → {1} | {2} | {3} id or hash taken | {6} parent revoked.
const std::string kScriptApiKeyCreate = kPointerCreate + R"lua(
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
if redis.call('HEXISTS', KEYS[3], ARGV[5]) == 1 or
   (not CLUSTER and redis.call('EXISTS', KEYS[4]) == 1) then
  return {3}
end
if ARGV[9] ~= '' then
  local raw = redis.call('HGET', KEYS[3], ARGV[9])
  local ok, p = pcall(cjson.decode, raw or '')
  if not raw or not ok or type(p) ~= 'table' or p.revoked == true then return {6} end
end
if not CLUSTER then pointer_create(KEYS[4]) end
redis.call('HSET', KEYS[3], ARGV[5], ARGV[7])
audit('apikey.create', ARGV[5])
return {1}
)lua";

// KEYS[2] project hash, [3] apikeys hash; ARGV[5] id, [6] gateway-key hash
// prefix. Revokes the key and every key minted by it, transitively (the
// metadata's `parent`): each gateway-key hash gets revoked="1" (only if it
// names this project) and each metadata revoked=true; keys revoked earlier
// keep their revoked_at.
// → {0, metadata JSON of the key, ids also revoked...} | {2} | {4} no such
// id | {7} metadata unreadable (nothing written).
const std::string kScriptApiKeyRevoke = R"lua(
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
local raw = redis.call('HGET', KEYS[3], ARGV[5])
if not raw then return {4} end
local ok, m = pcall(cjson.decode, raw)
if not ok or type(m) ~= 'table' or type(m.hash) ~= 'string' then return {7} end
local meta = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all - 1, 2 do
  local ok2, mi = pcall(cjson.decode, all[i + 1])
  if ok2 and type(mi) == 'table' then meta[all[i]] = mi end
end
meta[ARGV[5]] = m
local queue, seen, out, also = {ARGV[5]}, {[ARGV[5]] = true}, nil, {}
while #queue > 0 do
  local id = table.remove(queue, 1)
  local mi = meta[id]
  if type(mi.hash) == 'string' and string.match(mi.hash, '^%x+$') then
    pointer('revoke', ARGV[6], mi.hash, mi.revoked_at or ARGV[2])
  end
  if mi.revoked ~= true then
    mi.revoked = true
    mi.revoked_at = ARGV[2]
  end
  local enc = cjson.encode(mi)
  redis.call('HSET', KEYS[3], id, enc)
  audit('apikey.revoke', id)
  if id == ARGV[5] then out = enc else also[#also + 1] = id end
  for child, mc in pairs(meta) do
    if not seen[child] and mc.parent == id then
      seen[child] = true
      queue[#queue + 1] = child
    end
  end
end
table.sort(also)
local r = {0, out}
for _, id in ipairs(also) do r[#r + 1] = id end
return r
)lua";

// Compare-and-set of one provider's key set (lib/record.h).
// KEYS[2] project hash, [3] keys hash, [4] key-health hash; ARGV[5]
// provider, [6] expected current JSON ("" = must be absent), [7] new JSON
// ("" = remove the field), [8] "1" = require tier starter or above, [9]
// audit action, [10] audit target, [11..] key ids whose health starts over
// (a replaced key, a test that says valid): removed from the hash and
// announced to every node (lib/key_health.h message).
// → {1} created | {0} replaced | {2} | {5} tier too low | {6} record changed.
const std::string kScriptKeySet = kTierRule + R"lua(
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
if ARGV[8] == '1' then
  if not byok_tier(redis.call('HGET', KEYS[2], 'tier')) then return {5} end
end
local cur = redis.call('HGET', KEYS[3], ARGV[5])
if (cur or '') ~= ARGV[6] then return {6} end
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[3], ARGV[5])
else
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[7])
end
for i = 11, #ARGV do
  if redis.call('HDEL', KEYS[4], ARGV[i]) == 1 then
    redis.call('PUBLISH', ARGV[3], '~health ' .. ARGV[4] .. ' ' .. ARGV[i] .. ' healthy 0')
  end
end
audit(ARGV[9], ARGV[10])
if cur then return {0} end
return {1}
)lua";

// Re-encrypted records of one project, each written only if the stored JSON
// is unchanged. KEYS[2] keys hash, [3] servers hash; ARGV[5] active kid,
// [6] number N of provider-key triples, then triples (field, expected JSON,
// new JSON): the first N for the keys hash, the rest for the servers hash.
// → {0, written, skipped}.
const std::string kScriptRotate = R"lua(
local n, skipped = 0, 0
local nkeys = tonumber(ARGV[6]) or 0
local idx = 0
for i = 7, #ARGV - 2, 3 do
  local h = KEYS[2]
  if idx >= nkeys then h = KEYS[3] end
  idx = idx + 1
  if redis.call('HGET', h, ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', h, ARGV[i], ARGV[i + 2])
    n = n + 1
  else
    skipped = skipped + 1
  end
end
if n > 0 then audit('keys.rotate', ARGV[5]) end
return {0, n, skipped}
)lua";

// Compare-and-set of one execution-server record, keeping "at most one
// default per project" and the project's `default_server` field in step.
// KEYS[2] project hash, [3] servers hash; ARGV[5] server id, [6] expected
// current JSON ("" = must be absent: create), [7] new JSON, [8] "1" = the
// new record is the project's default, [9] audit action, [10] "1" = the
// project must be on the starter tier or above (create and PUT).
// When [8] is "1", every other record with is_default = true is rewritten
// with is_default = false (updated_at = ARGV[2]) and default_server is set
// to the id; otherwise default_server is removed if it named this server.
// → {1} created | {0} replaced | {2} no project | {3} exists (create) |
//   {4} gone (replace) | {5} tier too low | {6} record changed meanwhile.
const std::string kScriptServerSet = kTierRule + R"lua(
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
if ARGV[10] == '1' then
  if not byok_tier(redis.call('HGET', KEYS[2], 'tier')) then return {5} end
end
local cur = redis.call('HGET', KEYS[3], ARGV[5])
if ARGV[6] == '' then
  if cur then return {3} end
else
  if not cur then return {4} end
  if cur ~= ARGV[6] then return {6} end
end
if ARGV[8] == '1' then
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all - 1, 2 do
    if all[i] ~= ARGV[5] then
      local ok, r = pcall(cjson.decode, all[i + 1])
      if ok and type(r) == 'table' and r.is_default == true then
        r.is_default = false
        r.updated_at = ARGV[2]
        redis.call('HSET', KEYS[3], all[i], cjson.encode(r))
      end
    end
  end
  redis.call('HSET', KEYS[2], 'default_server', ARGV[5])
elseif redis.call('HGET', KEYS[2], 'default_server') == ARGV[5] then
  redis.call('HDEL', KEYS[2], 'default_server')
end
redis.call('HSET', KEYS[3], ARGV[5], ARGV[7])
audit(ARGV[9], ARGV[5])
if cur then return {0} end
return {1}
)lua";

// KEYS[2] project hash, [3] servers hash; ARGV[5] server id. Clears the
// project's default_server when it named this server.
// → {0, 1 if it was the default else 0} | {2} | {4} no such server.
const std::string kScriptServerDelete = R"lua(
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
if redis.call('HDEL', KEYS[3], ARGV[5]) == 0 then return {4} end
local was = 0
if redis.call('HGET', KEYS[2], 'default_server') == ARGV[5] then
  redis.call('HDEL', KEYS[2], 'default_server')
  was = 1
end
audit('server.delete', ARGV[5])
return {0, was}
)lua";

// Stores a connection-test result only if the record still has the tested
// configuration (config_rev unchanged: a concurrent rename is kept, a
// changed host or credential is not marked with the old result). With
// ARGV[10] set (trust on first use) it also pins that fingerprint into
// connection_config.host_key_fingerprint, only if none is pinned yet, and
// replaces `secrets` with ARGV[13]: the secrets re-sealed bound to the pinned
// fingerprint (record version 2). A record with secrets is not pinned
// without them (its secrets would no longer decrypt).
// KEYS[2] servers hash; ARGV[5] server id, [6] config_rev, [7]
// last_tested_at, [8] test_status, [9] test_message (fixed per outcome),
// [10] fingerprint seen or "", [11] test_excerpt (redacted), [12]
// test_http_status ("0" = none), [13] re-sealed secrets JSON or "".
// → {0, 1 if the fingerprint was pinned else 0} | {4} record gone |
//   {6} record changed or unreadable.
const std::string kScriptServerTestStore = R"lua(
local cur = redis.call('HGET', KEYS[2], ARGV[5])
if not cur then return {4} end
local ok, r = pcall(cjson.decode, cur)
if not ok or type(r) ~= 'table' or r.config_rev ~= ARGV[6] then return {6} end
r.last_tested_at = ARGV[7]
r.test_status = ARGV[8]
r.test_message = ARGV[9]
r.test_excerpt = ARGV[11]
r.test_http_status = tonumber(ARGV[12]) or 0
local pinned = 0
local has_secrets = r.secrets ~= nil and r.secrets ~= cjson.null
if ARGV[10] ~= '' and type(r.connection_config) == 'table' and
   (ARGV[13] ~= '' or not has_secrets) then
  local fp = r.connection_config.host_key_fingerprint
  if fp == nil or fp == cjson.null or fp == '' then
    r.connection_config.host_key_fingerprint = ARGV[10]
    if ARGV[13] ~= '' then
      r.secrets = cjson.decode(ARGV[13])
      r.v = r.secrets.v
    end
    pinned = 1
  end
end
redis.call('HSET', KEYS[2], ARGV[5], cjson.encode(r))
audit('server.test', ARGV[5])
return {0, pinned}
)lua";

// A key's health changed on a gateway node (lib/key_health.h). KEYS[2]
// key-health hash; ARGV[5] key id, [6] wire form ("" = healthy: remove),
// [7] message for every node, [8] audit target, [9] "1" = audit it. The
// message goes out on the invalidation channel (ARGV[3]) as it is; the
// audit entry (for `invalid` only) also invalidates the project.
// → {0}.
const std::string kScriptKeyHealth = R"lua(
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[2], ARGV[5])
else
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
end
redis.call('PUBLISH', ARGV[3], ARGV[7])
if ARGV[9] == '1' then audit('key.invalid', ARGV[8]) end
return {0}
)lua";

// Read-only. KEYS[1] project hash, KEYS[2..] more hashes of the project.
// → {2} | {0, HGETALL KEYS[1], HGETALL KEYS[2], ...}.
const std::string kScriptReadProject = R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {2} end
local r = {0, redis.call('HGETALL', KEYS[1])}
for i = 2, #KEYS do r[#r + 1] = redis.call('HGETALL', KEYS[i]) end
return r
)lua";

// Read-only. → {HGETALL KEYS[1], HGETALL KEYS[2], ...} (no status code).
const std::string kScriptMultiHgetall = R"lua(
local r = {}
for i = 1, #KEYS do r[i] = redis.call('HGETALL', KEYS[i]) end
return r
)lua";

// Cluster mode, single-key follow-ups (KEYS[1] a gateway-key hash):
// ARGV[1] drop|revoke, [2] project id, [3] revoked_at. → 0 | 1.
const std::string kScriptPointer = kPointerApply + R"lua(
return pointer_apply(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
)lua";

// Cluster mode, before kScriptApiKeyCreate: the new gateway key's hash,
// first. It authenticates nothing until the project's script has written
// the key's metadata (read_lookup_reply and the admin API check both).
// KEYS[1] gateway-key hash; ARGV as kScriptApiKeyCreate's. → {1} | {3} taken.
const std::string kScriptPointerCreate = kPointerCreate + R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return {3} end
pointer_create(KEYS[1])
return {1}
)lua";

std::string mutation_script(const std::string &body, bool cluster) {
    return std::string("local CLUSTER = ") + (cluster ? "true" : "false") + "\n" + kPointerApply +
           kAuditBody + "local function main()\n" + body +
           "\nend\nlocal r = main()\n"
           "if CLUSTER then return {r, AUDITED, POINTERS} end\n"
           "return r\n";
}

}  // namespace byok::admin::detail

namespace byok::admin {

std::vector<std::vector<std::string>> audit_entry_commands(
    const Layout &layout, std::string_view actor, std::string_view at, std::string_view pid,
    std::string_view action, std::string_view target) {
    std::vector<std::vector<std::string>> out{
        detail::mutation_argv(layout, detail::kScriptAuditEntry, pid, actor, at, "", {},
                              {std::string(action), std::string(target)})};
    if (layout.cluster())
        out.push_back(detail::global_audit_copy(
            layout, detail::audit_fields(actor, action, pid, target, at), ""));
    return out;
}

}  // namespace byok::admin

namespace byok {

namespace {

// The project part of the gateway's lookup, one Lua body for both modes:
// the project's settings, its encrypted key records and its keys' stored
// health (so a node that starts after a verdict learns it), read atomically.
const char *kLookupProjectPart =
    "local function project_part(project, keys, health)\n"
    "  return redis.call('HGETALL', project), redis.call('HGETALL', keys),\n"
    "         redis.call('HGETALL', health)\n"
    "end\n";

// Standalone, one round trip: the gateway-key hash, then the project part.
// The key names are built from Layout templates split around the project id
// (ARGV), so the layout stays defined in one place.
// → {apikey hash, project hash, keys hash, key_health hash}.
const std::string kLookupScript =
    std::string(kLookupProjectPart) +
    "local a = redis.call('HGETALL', KEYS[1])\n"
    "local pid\n"
    "for i = 1, #a, 2 do if a[i] == 'project' then pid = a[i + 1] end end\n"
    "if not pid then return {a, {}, {}, {}} end\n"
    "local p, k, h = project_part(ARGV[1] .. pid .. ARGV[2], ARGV[3] .. pid .. ARGV[4],\n"
    "                             ARGV[5] .. pid .. ARGV[6])\n"
    "return {a, p, k, h}";

// Cluster mode, second step (the gateway-key hash was read first, in its own
// slot): the project part and the key's metadata, all `{pid}` keys.
// KEYS[1] project hash, [2] keys hash, [3] key_health hash, [4] apikeys
// hash; ARGV[1] key id. → {project, keys, key_health, metadata or nil}.
const std::string kLookupClusterScript = std::string(kLookupProjectPart) +
                                         "local p, k, h = project_part(KEYS[1], KEYS[2], KEYS[3])\n"
                                         "return {p, k, h, redis.call('HGET', KEYS[4], ARGV[1])}";

}  // namespace

std::vector<std::string> gateway_lookup_command(const Layout &layout, const std::string &sha_hex) {
    if (layout.cluster()) return {"HGETALL", layout.apikey(sha_hex)};
    static const std::string marker = "\x01";
    auto split = [](const std::string &key) {
        size_t at = key.find(marker);
        return std::make_pair(key.substr(0, at), key.substr(at + marker.size()));
    };
    auto [project_head, project_tail] = split(layout.project(marker));
    auto [keys_head, keys_tail] = split(layout.keys(marker));
    auto [health_head, health_tail] = split(layout.key_health(marker));
    return {"EVAL",       kLookupScript, "1",       layout.apikey(sha_hex),
            project_head, project_tail,  keys_head, keys_tail,
            health_head,  health_tail};
}

std::vector<std::string> gateway_lookup_project_command(const Layout &layout,
                                                        const std::string &pid,
                                                        const std::string &key_id) {
    return {"EVAL",
            kLookupClusterScript,
            "4",
            layout.project(pid),
            layout.keys(pid),
            layout.key_health(pid),
            layout.apikeys(pid),
            key_id};
}

}  // namespace byok
