// A vector that keeps its first N elements inline (issue 18): the rows the
// route decision fills per request (one per provider of the project, the
// keys a request tried) stay within N in practice, so filling them costs no
// allocation; a longer list moves to the heap and stays correct. Elements
// are small plain values (views, enums, numbers, pairs of them).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <vector>

namespace byok {

template <class T, size_t N>
class SmallVec {
  public:
    using value_type = T;
    using iterator = T *;
    using const_iterator = const T *;

    SmallVec() = default;
    SmallVec(std::initializer_list<T> l) {
        for (const T &v : l) push_back(v);
    }
    SmallVec(const SmallVec &o) { *this = o; }
    SmallVec &operator=(const SmallVec &o) {
        if (this == &o) return *this;
        clear();
        for (const T &v : o) push_back(v);
        return *this;
    }

    void clear() {
        n_ = 0;
        heap_.clear();
    }
    void push_back(const T &v) {
        if (!heap_.empty() || n_ == N) {
            if (heap_.empty()) heap_.assign(inline_, inline_ + n_);
            heap_.push_back(v);
        } else {
            inline_[n_] = v;
        }
        n_++;
    }
    template <class... A>
    T &emplace_back(A &&...a) {
        push_back(T(static_cast<A &&>(a)...));
        return data()[n_ - 1];
    }

    T *data() { return heap_.empty() ? inline_ : heap_.data(); }
    const T *data() const { return heap_.empty() ? inline_ : heap_.data(); }
    size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    T &operator[](size_t i) { return data()[i]; }
    const T &operator[](size_t i) const { return data()[i]; }
    T *begin() { return data(); }
    T *end() { return data() + n_; }
    const T *begin() const { return data(); }
    const T *end() const { return data() + n_; }

  private:
    T inline_[N] = {};
    size_t n_ = 0;
    std::vector<T> heap_;  // all elements once there are more than N
};

}  // namespace byok
