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
#include <utility>

#include "lib/multipart.h"
#include "lib/util.h"

namespace {

// "none", "error: <message>" or "<model>|<begin>|<end>".
std::string outcome(std::string_view boundary, std::string_view in, const size_t *cuts,
                    size_t ncuts) {
    try {
        byok::MultipartScanner s(boundary);
        size_t at = 0;
        for (size_t i = 0; i < ncuts; i++) {
            size_t cut = cuts[i] < at ? at : cuts[i] > in.size() ? in.size() : cuts[i];
            s.feed(in.substr(at, cut - at));
            at = cut;
        }
        s.feed(in.substr(at));
        auto m = s.finish();
        if (!m) return "none";
        return m->model + "|" + std::to_string(m->begin) + "|" + std::to_string(m->end);
    } catch (const byok::Error &e) {
        return std::string("error: ") + e.what();
    }
}

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
    size_t cuts[3] = {size > 1 ? data[1] % (n + 1) : 0, size > 2 ? data[2] % (n + 1) : 0, n / 2};
    if (cuts[1] < cuts[0]) std::swap(cuts[0], cuts[1]);
    std::string whole = outcome(boundary, in, nullptr, 0);
    if (outcome(boundary, in, cuts, 2) != whole || outcome(boundary, in, cuts + 2, 1) != whole)
        abort();
    size_t every[64];
    size_t k = n < 64 ? n : 64;
    for (size_t i = 0; i < k; i++) every[i] = i + 1;
    if (outcome(boundary, in, every, k) != whole) abort();

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
        bool control = false;
        for (unsigned char c : m) control = control || c < 0x20 || c == 0x7f;
        if (control) continue;
        std::string out = byok::replace_model(in, *span, m);
        if (out.compare(0, span->begin, in.substr(0, span->begin)) != 0 ||
            std::string_view(out).substr(out.size() - (n - span->end)) != in.substr(span->end))
            abort();
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
