// SseUsageDropper (lib/usage_scanner.h): removes the usage-only chunk the
// gateway asked for from an OpenAI-compatible stream the client did not ask
// usage for; the usage scanner itself is lib/usage_scanner.cpp.
#include "lib/usage_scanner.h"

#include "lib/text.h"

namespace byok {

bool SseUsageDropper::is_usage_only_event(std::string_view event) {
    // Cheap test first: almost no event mentions usage at all.
    if (event.find("usage") == std::string_view::npos) return false;
    // The data of the event: its "data:" lines joined.
    std::string data;
    size_t i = 0;
    while (i < event.size()) {
        size_t nl = event.find('\n', i);
        std::string_view line = event.substr(i, nl == std::string_view::npos ? nl : nl - i);
        i = nl == std::string_view::npos ? event.size() : nl + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.substr(0, 5) != "data:") continue;
        line.remove_prefix(5);
        if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        if (!data.empty()) data.push_back('\n');
        data.append(line);
    }
    size_t first = data.find_first_not_of(" \t\r\n");
    if (first == std::string::npos || data[first] != '{') return false;
    if (!UsageScanner::scan(data).known) return false;
    // "choices" followed by an empty array, at any spacing.
    size_t at = 0;
    while ((at = data.find("\"choices\"", at)) != std::string::npos) {
        size_t j = at + 9;
        while (j < data.size() && is_json_ws(data[j])) j++;
        if (j < data.size() && data[j] == ':') {
            j++;
            while (j < data.size() && is_json_ws(data[j])) j++;
            if (j < data.size() && data[j] == '[') {
                j++;
                while (j < data.size() && is_json_ws(data[j])) j++;
                return j < data.size() && data[j] == ']';
            }
        }
        at += 9;
    }
    return false;
}

void SseUsageDropper::feed(std::string_view bytes, std::string *out) {
    size_t i = 0;
    while (i < bytes.size()) {
        // Find the blank line that ends the current event ("\n\n", CRs
        // ignored): jump from newline to newline.
        size_t endpos = std::string_view::npos;
        size_t j = i;
        while (j < bytes.size()) {
            if (last_ == '\n') {
                // Right after a newline: skip CRs, a second newline ends it.
                while (j < bytes.size() && bytes[j] == '\r') j++;
                if (j == bytes.size()) break;
                if (bytes[j] == '\n') {
                    last_ = 0;
                    endpos = j;
                    break;
                }
            }
            size_t nl = bytes.find('\n', j);
            if (nl == std::string_view::npos) {
                // Remember the last byte that is not a CR.
                for (size_t k = bytes.size(); k > j; k--) {
                    if (bytes[k - 1] != '\r') {
                        last_ = bytes[k - 1];
                        break;
                    }
                }
                j = bytes.size();
                break;
            }
            last_ = '\n';
            j = nl + 1;
        }
        size_t stop = endpos == std::string_view::npos ? bytes.size() : endpos + 1;
        std::string_view part = bytes.substr(i, stop - i);
        i = stop;
        if (passing_) {
            out->append(part);
            if (endpos != std::string_view::npos) passing_ = false;
            continue;
        }
        if (endpos != std::string_view::npos && event_.empty()) {
            // The whole event is in this buffer: examine it in place.
            if (part.size() <= kMaxEvent && is_usage_only_event(part))
                dropped_ = true;
            else
                out->append(part);
            continue;
        }
        event_.append(part);
        if (endpos != std::string_view::npos) {
            // Events over the cap pass unexamined, wherever the reads split.
            if (event_.size() <= kMaxEvent && is_usage_only_event(event_))
                dropped_ = true;
            else
                out->append(event_);
            event_.clear();
        } else if (event_.size() > kMaxEvent) {
            out->append(event_);
            event_.clear();
            passing_ = true;
        }
    }
}

void SseUsageDropper::finish(std::string *out) {
    out->append(event_);
    event_.clear();
    passing_ = false;
}

}  // namespace byok
