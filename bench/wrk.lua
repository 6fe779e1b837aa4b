-- wrk script for `make bench`: POST a small chat-completions body.
--
-- Static mode (default): one pre-built request; headers such as
-- Authorization or x-portkey-* come from wrk's -H options.
-- Rotating mode (BENCH_KEYS_FILE=<file of gateway keys, one a line>): every
-- request carries the next key of the file as "Authorization: Bearer <key>",
-- starting at line BENCH_KEYS_OFFSET; used for the cold path and to fill the
-- cache.
--
-- done() prints one machine-readable line:
--   BENCHJSON {"requests":..,"rps":..,"p50_us":..,"p99_us":..,...}

wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one word."}]}'
wrk.headers["Content-Type"] = "application/json"

local keys_file = os.getenv("BENCH_KEYS_FILE")

if keys_file and keys_file ~= "" then
    local keys = {}
    local idx = 0
    local hdrs = {}

    function init(args)
        for line in io.lines(keys_file) do
            if #line > 0 then keys[#keys + 1] = line end
        end
        idx = tonumber(os.getenv("BENCH_KEYS_OFFSET") or "0") % #keys
        for k, v in pairs(wrk.headers) do hdrs[k] = v end
    end

    function request()
        idx = idx + 1
        if idx > #keys then idx = 1 end
        hdrs["Authorization"] = "Bearer " .. keys[idx]
        return wrk.format(nil, nil, hdrs, nil)
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        'BENCHJSON {"requests":%d,"duration_us":%d,"rps":%.1f,"bytes":%d,' ..
        '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
        '"lat_mean_us":%.1f,"lat_stdev_us":%.1f,"lat_min_us":%d,"lat_max_us":%d,' ..
        '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
        summary.requests, summary.duration, summary.requests / secs, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.mean, latency.stdev, latency.min, latency.max,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9)))
end
