#include "lib/key_select.h"

namespace byok {

int SmoothWeightedRoundRobin::pick(const std::vector<KeyCandidate> &keys) {
    if (keys.empty()) return -1;
    if (keys.size() == 1) return 0;
    std::map<std::string, int64_t, std::less<>> next;
    int64_t total = 0;
    int best = -1;
    int64_t best_current = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
        auto it = current_.find(keys[i].id);
        int64_t current = (it == current_.end() ? 0 : it->second) + keys[i].weight;
        total += keys[i].weight;
        next[std::string(keys[i].id)] = current;
        if (best < 0 || current > best_current) {
            best = static_cast<int>(i);
            best_current = current;
        }
    }
    next[std::string(keys[best].id)] -= total;
    current_ = std::move(next);
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
