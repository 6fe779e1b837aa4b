// Request-body model extraction and rewrite (lib/body.h). The scanner fed
// in pieces (split where the input's first bytes say) must answer exactly
// what the one-shot scan answers. When a model is found, the rewritten body
// must still be a valid object whose top-level model is the new value, with
// everything outside the span unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "lib/body.h"
#include "lib/util.h"

namespace {

// "none", "error: <message>" or "<model>|<begin>|<end>".
std::string outcome(std::string_view in, const size_t *cuts, size_t ncuts) {
    try {
        byok::ModelScanner s;
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view in(reinterpret_cast<const char *>(data), size);
    // Split points for the piecewise scans come from the input itself.
    size_t cuts[3] = {size > 0 ? data[0] % (size + 1) : 0, size > 1 ? data[1] % (size + 1) : 0,
                      size / 2};
    if (cuts[1] < cuts[0]) std::swap(cuts[0], cuts[1]);
    std::string whole = outcome(in, nullptr, 0);
    if (outcome(in, cuts, 2) != whole || outcome(in, cuts + 2, 1) != whole) abort();
    size_t every[64];
    size_t n = size < 64 ? size : 64;
    for (size_t i = 0; i < n; i++) every[i] = i + 1;  // byte by byte at the start
    if (outcome(in, every, n) != whole) abort();

    std::optional<byok::ModelSpan> span;
    try {
        span = byok::find_model(in);
    } catch (const byok::Error &) {
        return 0;
    }
    if (!span) return 0;
    if (span->begin >= span->end || span->end > in.size() || in[span->begin] != '"' ||
        in[span->end - 1] != '"')
        abort();

    // A few replacements: the prefix-stripped form the gateway sends, and
    // values that need escaping.
    const std::string candidates[] = {
        "gpt-4o",
        span->model.substr(span->model.find('/') == std::string::npos ? 0
                                                                      : span->model.find('/') + 1),
        std::string("q\"uote\\back\nnl\x01\x7f\xc3\xa9", 17),
        "",
    };
    for (const std::string &m : candidates) {
        std::string out = byok::replace_model(in, *span, m);
        if (out.compare(0, span->begin, in.substr(0, span->begin)) != 0) abort();
        if (std::string_view(out).substr(out.size() - (in.size() - span->end)) !=
            in.substr(span->end))
            abort();
        std::optional<byok::ModelSpan> again;
        try {
            again = byok::find_model(out);
        } catch (const byok::Error &) {
            abort();  // the rewrite broke the JSON
        }
        if (!again || again->model != m) abort();
        // The gateway's file form: the old value blanked, the token after it.
        std::string blanked(in);
        blanked.replace(span->begin, span->end - span->begin, span->end - span->begin, ' ');
        blanked.insert(span->end, byok::model_token(m));
        try {
            again = byok::find_model(blanked);
        } catch (const byok::Error &) {
            abort();
        }
        if (!again || again->model != m) abort();
    }
    return 0;
}
