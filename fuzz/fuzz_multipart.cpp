// libFuzzer target for the multipart model scanner (lib/multipart.h). Input:
// one byte choosing the boundary, then the body. The scanner fed in pieces
// (split where the input's first bytes say, and byte by byte at the start)
// must answer exactly what the one-shot scan answers; a found span must sit
// right before a delimiter; and both rewrite forms the gateway uses (span
// cut in memory, span overwritten by the filler in the temp file) must scan
// back to the new model with the rest of the body untouched.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz/scanner_harness.h"
#include "lib/multipart.h"
#include "lib/text.h"
#include "lib/util.h"

namespace {

std::optional<byok::ModelSpan> scan(std::string_view boundary, std::string_view in) {
    byok::MultipartScanner s(boundary);
    s.feed(in);
    return s.finish();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    // A self-overlapping boundary and an SDK-like one.
    const std::string boundary = (data[0] & 1) ? "aXa" : "----formdata-undici-0123";
    std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
    size_t n = in.size();
    fuzz::check_piecewise([&boundary] { return byok::MultipartScanner(boundary); }, in,
                          size > 1 ? data[1] : 0, size > 2 ? data[2] : 0);

    std::optional<byok::ModelSpan> span;
    try {
        span = scan(boundary, in);
    } catch (const byok::Error &) {
        return 0;
    }
    if (!span) return 0;
    std::string delim = "\r\n--" + boundary;
    if (span->begin >= span->end || span->end > n || in.substr(span->end, delim.size()) != delim ||
        span->model.size() > span->end - span->begin ||
        in.substr(span->end - span->model.size(), span->model.size()) != span->model)
        abort();

    // The gateway admits only models without control bytes.
    const std::string candidates[] = {"openai/gpt-4o-transcribe", "", "\xc3\xa9 x", span->model};
    for (const std::string &m : candidates) {
        if (byok::contains_control(m)) continue;
        std::string out = byok::replace_model(in, *span, m);
        fuzz::check_spliced(in, span->begin, span->end, out);
        std::string filler = byok::span_filler(*span);
        if (filler.size() != span->end - span->begin) abort();
        std::string file(in);
        file.replace(span->begin, filler.size(), filler);
        file.insert(span->end, byok::model_token(*span, m));
        for (const std::string &body : {out, file}) {
            std::optional<byok::ModelSpan> again;
            try {
                again = scan(boundary, body);
            } catch (const byok::Error &) {
                abort();  // the rewrite broke the body
            }
            if (!again || again->model != m) abort();
        }
    }
    return 0;
}
