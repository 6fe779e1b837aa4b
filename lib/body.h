// Request-body handling on the hot path: find the top-level "model" of a
// JSON object without building a DOM, and rewrite it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace byok {

struct ModelSpan {
    size_t begin = 0;   // offset of the opening quote of the value
    size_t end = 0;     // offset one past the closing quote
    std::string model;  // unescaped value
};

// Validates that `body` is a single well-formed JSON object (depth <= 64)
// and returns the top-level "model" string, or nullopt when absent or not a
// string. Throws Error("request body is not valid JSON") otherwise.
std::optional<ModelSpan> find_model(std::string_view body);

// Body with the model value replaced by `model` (JSON-escaped).
std::string replace_model(std::string_view body, const ModelSpan &span, std::string_view model);

}  // namespace byok
