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

#include "fuzz/scanner_harness.h"
#include "lib/body.h"
#include "lib/util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view in(reinterpret_cast<const char *>(data), size);
    // Split points for the piecewise scans come from the input itself.
    fuzz::check_piecewise([] { return byok::ModelScanner(); }, in, size > 0 ? data[0] : 0,
                          size > 1 ? data[1] : 0);

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
        fuzz::check_spliced(in, span->begin, span->end, out);
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
