// Usage metering: what one finished gateway request adds to the counters
// and the usage event stream, cost from the catalog's prices, and the
// `stream_options.include_usage` injection. The one place that knows the
// counter field format: written here (meter_increments) and read here
// (parse_meter_field).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/body.h"
#include "lib/catalog.h"
#include "lib/layout.h"
#include "lib/usage_scanner.h"

namespace byok {

// Cost in integer micro-dollars, rounded to the nearest: uncached input at
// `input`, cached input at `cached_input`, output at `output`. Cache writes
// are priced as input. 0 when there is no price.
int64_t cost_micro_usd(const ModelPrice *price, const TokenUsage &u);
// 1234567 → "1.234567"
std::string micro_usd_string(int64_t micro);

// One finished request, as the log phase sees it. Views (issue 18: no
// copy per request): the record lives no longer than the strings it names.
struct MeterRecord {
    std::string_view request_id;
    std::string_view project;
    std::string_view provider;
    std::string_view model;   // as sent upstream (capped at kMaxModel bytes in counters)
    std::string_view route;   // byok | system | fallback
    std::string_view key_id;  // gateway key id
    std::string_view fallback_reason;
    std::string_view day;  // yyyymmdd (UTC)
    int64_t at_ms = 0;
    unsigned status = 0;
    uint64_t latency_ms = 0;
    TokenUsage usage;
    int64_t cost_micro = 0;
};

// The counter metrics.
enum class Metric { Requests, Input, Output, Cached, Cost, Unknown };
std::string_view metric_name(Metric m);  // "requests", "input_tokens", ...

// Counter hashes (HINCRBY, batched by the glue):
//   Layout::meter(pid, day) fields
//     "m|<metric>|<provider>|<route>|<model>"   per provider, route, model
//     "k|<metric>|<gateway-key-id>"              per gateway key
//   Layout::meter_all(day) fields
//     "<pid>|<metric>"                            per project (admin ranking)
// A project holds one key per provider, so the provider rows with route
// byok are the per-provider-key counters.
struct Increment {
    std::string key, field;
    int64_t by = 0;
};
constexpr size_t kMaxModel = 128;
std::vector<Increment> meter_increments(const Layout &layout, const MeterRecord &rec);

// What records with the same project, provider, route, model, key id and
// day add up to: the glue sums requests in worker memory under that key
// (no per-request allocation) and expands the sums once per flush.
struct MeterTotals {
    int64_t requests = 0, input = 0, output = 0, cached = 0, cost = 0, unknown = 0;
};
MeterTotals meter_totals(const MeterRecord &rec);  // one request's contribution
void add_totals(MeterTotals &into, const MeterTotals &t);
// The increments of `t` under rec's project, provider, route, model, key id
// and day (rec's usage and cost are not read).
std::vector<Increment> meter_increments(const Layout &layout, const MeterRecord &rec,
                                        const MeterTotals &t);

struct MeterField {
    enum class Kind { Detail, GatewayKey, Project } kind = Kind::Detail;
    Metric metric = Metric::Requests;
    std::string provider, route, model, key_id, project;
};
// nullopt for fields this version does not know (skipped by readers).
std::optional<MeterField> parse_meter_field(std::string_view field, bool global_hash);

// The usage event (XADD field/value pairs): no secret, no content.
std::vector<std::string> usage_event_fields(const MeterRecord &rec);
constexpr long kUsageEventsMaxLen = 100000;  // XTRIM MAXLEN ~
// Usage events leave in batches: one Redis command per batch, an EVAL of
// usage_events_script() (generated from the event's field names) that
// XADDs each event, then trims the stream once to MAXLEN ~
// kUsageEventsMaxLen, so a flush costs one reply, not one per request — a
// stalled Redis answers the worker with a handful of replies, not a storm.
// The script names the fields; a request appends only its event's values
// (RESP bulk strings, in usage_event_fields() order, empty ones kept) to a
// batch's body (UsageEventBatch: no allocation once the buffer has grown;
// the glue reserves a batch's worth once); the flush puts
// usage_events_batch_head() in front:
//   EVAL <script> 1 <stream> <maxlen> <15 values of event 1> <event 2> ...
// 100: one batch runs ~2 ms in Redis, which is what a cache-miss lookup can
// wait behind (issue 18 cold path; 1,000 ran ~20 ms).
constexpr size_t kUsageEventsPerBatch = 100;
// One event's values appended to `out` (the form tests and tools read).
void append_usage_event_args(std::string &out, const MeterRecord &rec);
// One batch's values, appended event by event as append_usage_event_args()
// would, into a buffer that grows by doubling from `reserve` bytes; an
// event's bytes are written once (a std::string would zero-fill each
// event's bound, or the whole buffer, first). Throws std::bad_alloc.
class UsageEventBatch {
  public:
    explicit UsageEventBatch(size_t reserve = 0);
    // A moved-from batch is empty and usable (the implicit move would leave
    // its sizes behind a null buffer).
    UsageEventBatch(UsageEventBatch &&other) noexcept { swap(other); }
    UsageEventBatch &operator=(UsageEventBatch &&other) noexcept {
        UsageEventBatch(std::move(other)).swap(*this);
        return *this;
    }
    void swap(UsageEventBatch &other) noexcept {
        std::swap(buf_, other.buf_);
        std::swap(cap_, other.cap_);
        std::swap(used_, other.used_);
        std::swap(events_, other.events_);
    }
    void append(const MeterRecord &rec);
    size_t events() const { return events_; }
    std::string_view args() const { return {buf_.get(), used_}; }

  private:
    std::unique_ptr<char[]> buf_;  // cap_ bytes, the first used_ hold the events
    size_t cap_ = 0, used_ = 0, events_ = 0;
};
const std::string &usage_events_script();
// The 32 lowercase hex digits of hi then lo, each most significant digit
// first, at `out`: the request id the gateway mints for an event (issue 18).
void hex_id(uint64_t hi, uint64_t lo, char *out);
std::string usage_events_batch_head(std::string_view stream, size_t events);

// The include_usage injection for an OpenAI-compatible streamed request the
// client did not ask usage for: insert `bytes` at `offset` of the body. The
// glue applies it without copying the body (three buffers).
struct BodyInsert {
    size_t offset = 0;
    std::string bytes;
};
// True when a request to `path` (after /v1, query allowed) on the unified
// endpoint is one plan_include_usage() may edit: a cheap test before the
// body is looked at.
bool include_usage_applies(bool unified, std::string_view path);
// `unified`: the request came in on /v1 (OpenAI-compatible); `path`: the
// path under it ("/chat/completions"); `facts`: what the body scan
// (ModelScanner, lib/body.h) saw, so the body is never read twice and may
// be of any size. nullopt = leave it alone: not a chat/completions stream,
// or the client set stream_options itself.
std::optional<BodyInsert> plan_include_usage(bool unified, std::string_view path,
                                             const StreamFacts &facts);
// The same for a whole body in one piece (scans it; invalid JSON: nullopt).
std::optional<BodyInsert> plan_include_usage(bool unified, std::string_view path,
                                             std::string_view body);

}  // namespace byok
