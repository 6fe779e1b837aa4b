#include "lib/key_select.h"

namespace byok {

int SmoothWeightedRoundRobin::pick(const std::vector<KeyCandidate> &keys) {
    if (keys.empty()) return -1;
    if (keys.size() == 1) return 0;
    // Keys left out this time (cooling, already tried) keep their weight, as
    // nginx keeps a down peer's; a set that changed a lot starts over.
    if (current_.size() > 4 * kMaxKeys) current_.clear();
    int64_t total = 0;
    int best = 0;
    auto best_it = current_.end();
    for (size_t i = 0; i < keys.size(); ++i) {
        auto it = current_.find(keys[i].id);
        if (it == current_.end()) it = current_.emplace(std::string(keys[i].id), 0).first;
        it->second += keys[i].weight;
        total += keys[i].weight;
        if (best_it == current_.end() || it->second > best_it->second) {
            best = static_cast<int>(i);
            best_it = it;
        }
    }
    best_it->second -= total;
    return best;
}

int KeySelector::pick(std::string_view pid, std::string_view provider,
                      const std::vector<KeyCandidate> &keys) {
    if (keys.size() <= 1) return keys.empty() ? -1 : 0;
    std::string group = std::string(pid) + '\0' + std::string(provider);
    auto it = groups_.find(group);
    if (it == groups_.end()) {
        if (groups_.size() >= max_groups_) groups_.clear();
        it = groups_.emplace(std::move(group), SmoothWeightedRoundRobin()).first;
    }
    return it->second.pick(keys);
}

}  // namespace byok
