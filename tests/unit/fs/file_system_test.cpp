// SPDX-License-Identifier: Apache-2.0
// hmkfs against a model: thousands of random operations, each compared with
// what a plain in-memory tree says (result and error code), with remounts and
// fsck on the way; and crashes of the device at random writes, after which
// the image mounts, checks clean and holds the state before or after the
// operation that was under way.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "hmk/fs/file_system.hpp"

namespace hmk::fs {
namespace {

using services::run_now;

struct Node {
    FileKind kind = FileKind::none;
    std::string data;
};
using Tree = std::map<std::string, Node>;  // "/" and every path below it

std::string parent_of(const std::string& p) {
    const auto at = p.rfind('/');
    return at == 0 ? "/" : p.substr(0, at);
}

/// The model: what each operation must return.
class Model {
  public:
    Model() { m_tree["/"] = Node{FileKind::directory, {}}; }
    const Tree& tree() const { return m_tree; }

    // The error resolving the parent of `p`, walking it name by name.
    std::optional<FsError> parent_error(const std::string& p) const {
        std::string at;
        const std::string parent = parent_of(p);
        if (parent == "/") return std::nullopt;
        std::size_t i = 1;
        while (i <= parent.size()) {
            std::size_t end = parent.find('/', i);
            if (end == std::string::npos) end = parent.size();
            at += "/" + parent.substr(i, end - i);
            const auto it = m_tree.find(at);
            if (it == m_tree.end()) return FsError::not_found;
            if (it->second.kind != FileKind::directory) return FsError::not_a_directory;
            i = end + 1;
        }
        return std::nullopt;
    }
    std::optional<FsError> make(const std::string& p, FileKind kind) {
        if (p == "/") return FsError::exists;
        if (auto e = parent_error(p)) return e;
        if (m_tree.count(p) != 0) return FsError::exists;
        m_tree[p] = Node{kind, {}};
        return std::nullopt;
    }
    std::optional<FsError> write(const std::string& p, std::uint64_t offset,
                                 const std::string& data, bool create) {
        if (p != "/") {
            if (auto e = parent_error(p)) return e;
        }
        auto it = m_tree.find(p);
        if (it == m_tree.end()) {
            if (!create) return FsError::not_found;
            it = m_tree.emplace(p, Node{FileKind::file, {}}).first;
        }
        if (it->second.kind == FileKind::directory) return FsError::is_a_directory;
        std::string& d = it->second.data;
        if (!data.empty() && d.size() < offset + data.size()) d.resize(offset + data.size(), '\0');
        d.replace(offset, data.size(), data);
        return std::nullopt;
    }
    std::optional<FsError> truncate(const std::string& p, std::uint64_t size) {
        if (auto e = find_file(p)) return e;
        m_tree[p].data.resize(size, '\0');
        return std::nullopt;
    }
    std::optional<FsError> find_file(const std::string& p) const {
        if (p != "/") {
            if (auto e = parent_error(p)) return e;
        }
        const auto it = m_tree.find(p);
        if (it == m_tree.end()) return FsError::not_found;
        if (it->second.kind == FileKind::directory) return FsError::is_a_directory;
        return std::nullopt;
    }
    std::optional<FsError> remove(const std::string& p) {
        if (p == "/") return FsError::busy;
        if (auto e = parent_error(p)) return e;
        const auto it = m_tree.find(p);
        if (it == m_tree.end()) return FsError::not_found;
        if (it->second.kind == FileKind::directory && has_children(p)) return FsError::not_empty;
        m_tree.erase(it);
        return std::nullopt;
    }
    std::optional<FsError> rename(const std::string& from, const std::string& to) {
        if (from == "/" || to == "/") return FsError::busy;
        if (to.size() > from.size() && to.compare(0, from.size(), from) == 0 &&
            to[from.size()] == '/')
            return FsError::busy;
        if (auto e = parent_error(from)) return e;
        if (m_tree.count(from) == 0) return FsError::not_found;
        if (auto e = parent_error(to)) return e;
        if (from == to) return std::nullopt;
        const Node moving = m_tree[from];
        if (const auto dst = m_tree.find(to); dst != m_tree.end()) {
            if (dst->second.kind == FileKind::directory || moving.kind == FileKind::directory)
                return FsError::exists;
            m_tree.erase(dst);
        }
        // The node and everything below it.
        Tree moved;
        for (auto it = m_tree.begin(); it != m_tree.end();) {
            if (it->first == from || it->first.compare(0, from.size() + 1, from + "/") == 0) {
                moved[to + it->first.substr(from.size())] = it->second;
                it = m_tree.erase(it);
            } else {
                ++it;
            }
        }
        m_tree.insert(moved.begin(), moved.end());
        return std::nullopt;
    }
    bool has_children(const std::string& p) const {
        const std::string prefix = p == "/" ? "/" : p + "/";
        const auto it = m_tree.upper_bound(p);
        return it != m_tree.end() && it->first.compare(0, prefix.size(), prefix) == 0;
    }

  private:
    Tree m_tree;
};

std::span<const std::byte> bytes(const std::string& s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

/// Everything the file system holds, read back through list and read.
Tree dump(FileSystem& fs) {
    Tree out;
    std::vector<std::string> todo{"/"};
    out["/"] = Node{FileKind::directory, {}};
    while (!todo.empty()) {
        const std::string dir = todo.back();
        todo.pop_back();
        auto entries = run_now(fs.list(dir));
        EXPECT_TRUE(entries.has_value()) << dir << ": " << to_string(entries.error());
        if (!entries) continue;
        for (const DirEntry& e : *entries) {
            const std::string p = dir == "/" ? "/" + e.name : dir + "/" + e.name;
            Node n{e.stat.kind, {}};
            if (e.stat.kind == FileKind::directory) {
                todo.push_back(p);
            } else {
                auto data = run_now(fs.read(p, 0, static_cast<std::uint32_t>(e.stat.size)));
                EXPECT_TRUE(data.has_value()) << p;
                if (data) n.data.assign(reinterpret_cast<const char*>(data->data()), data->size());
                EXPECT_EQ(n.data.size(), e.stat.size) << p;
            }
            out[p] = n;
        }
    }
    return out;
}

std::string describe(const Tree& t) {
    std::string s;
    for (const auto& [p, n] : t) {
        s += p + (n.kind == FileKind::directory ? "/" : " " + std::to_string(n.data.size())) + "\n";
    }
    return s;
}

bool same(const Tree& a, const Tree& b) {
    if (a.size() != b.size()) return false;
    for (const auto& [p, n] : a) {
        const auto it = b.find(p);
        if (it == b.end() || it->second.kind != n.kind || it->second.data != n.data) return false;
    }
    return true;
}

/// Random operations on a small namespace, so that names collide.
class Driver {
  public:
    explicit Driver(std::uint32_t seed) : m_rng(seed) {}

    std::string path() {
        static const char* names[] = {"a", "b", "c", "d"};
        std::string p;
        const int depth = 1 + static_cast<int>(m_rng() % 3);
        for (int i = 0; i < depth; ++i) p += std::string("/") + names[m_rng() % 4];
        return p;
    }
    std::string data(std::size_t max) {
        std::string s(m_rng() % (max + 1), '\0');
        const char c = static_cast<char>('a' + m_rng() % 26);
        for (std::size_t i = 0; i < s.size(); ++i)
            s[i] = static_cast<char>(static_cast<std::size_t>(c) + i % 7);
        return s;
    }
    std::uint64_t offset() {
        switch (m_rng() % 4) {
            case 0:
                return 0;
            case 1:
                return m_rng() % 5000;
            case 2:
                return m_rng() % 300'000;  // into the indirect blocks
            default:
                return 4096 * (m_rng() % 8);
        }
    }

    /// One random operation on both; fails the test on any difference.
    void step(FileSystem& fs, Model& model) {
        const auto result = [](const Result<void, FsError>& r) {
            return r ? std::optional<FsError>{} : std::optional<FsError>{r.error()};
        };
        const auto op = m_rng() % 100;
        const std::string p = path();
        std::string what;
        std::optional<FsError> want;
        std::optional<FsError> got;
        if (op < 12) {
            what = "mkdir " + p;
            want = model.make(p, FileKind::directory);
            got = result(run_now(fs.mkdir(p)));
        } else if (op < 20) {
            what = "create " + p;
            want = model.make(p, FileKind::file);
            got = result(run_now(fs.create(p)));
        } else if (op < 45) {
            const std::string d = data(m_rng() % 10 == 0 ? 70'000 : 6000);
            const std::uint64_t at = offset();
            const bool create = m_rng() % 2 == 0;
            what = "write " + p + " at " + std::to_string(at) + " size " + std::to_string(d.size());
            want = model.write(p, at, d, create);
            got = result(run_now(fs.write(
                p, at, bytes(d), create ? FileSystem::Create::yes : FileSystem::Create::no)));
        } else if (op < 55) {
            const std::string d = data(3000);
            what = "append " + p;
            const auto e = model.find_file(p);
            if (!e) {
                want = model.write(p, model.tree().at(p).data.size(), d, false);
            } else if (e == FsError::not_found) {
                want = model.write(p, 0, d, true);  // created (or the parent is missing)
            } else {
                want = e;
            }
            got = result([&]() -> Result<void, FsError> {
                auto r = run_now(fs.append(p, bytes(d), FileSystem::Create::yes));
                if (!r) return Err{r.error()};
                return {};
            }());
        } else if (op < 63) {
            const std::uint64_t size = m_rng() % 3 == 0 ? 0 : m_rng() % 320'000;
            what = "truncate " + p + " to " + std::to_string(size);
            want = model.truncate(p, size);
            got = result(run_now(fs.truncate(p, size)));
        } else if (op < 73) {
            const std::string to = path();
            what = "rename " + p + " " + to;
            want = model.rename(p, to);
            got = result(run_now(fs.rename(p, to)));
        } else if (op < 83) {
            what = "remove " + p;
            want = model.remove(p);
            got = result(run_now(fs.remove(p)));
        } else {
            const std::uint64_t at = offset();
            const auto length = static_cast<std::uint32_t>(m_rng() % 20000);
            what = "read " + p;
            want = model.find_file(p);
            auto r = run_now(fs.read(p, at, length));
            got = r ? std::optional<FsError>{} : std::optional<FsError>{r.error()};
            if (r && !want) {
                const std::string& d = model.tree().at(p).data;
                const std::string expect = at < d.size() ? d.substr(at, length) : std::string();
                const std::string have(reinterpret_cast<const char*>(r->data()), r->size());
                ASSERT_EQ(have, expect) << what;
            }
        }
        ASSERT_EQ(got.has_value(), want.has_value())
            << what << ": fs says " << (got ? to_string(*got) : "ok") << ", model "
            << (want ? to_string(*want) : "ok");
        if (got) {
            ASSERT_EQ(*got, *want) << what << ": " << to_string(*got) << " vs " << to_string(*want);
        }
        ++m_steps;
        if (!got) ++m_succeeded[what.substr(0, what.find(' '))];
    }
    std::map<std::string, int> m_succeeded;  // by operation

    std::mt19937 m_rng;
    int m_steps = 0;
};

std::unique_ptr<FileSystem> mount(BlockIo& io) {
    auto fs = run_now(FileSystem::mount(io));
    if (!fs) ADD_FAILURE() << "mount: " << to_string(fs.error());
    return fs ? std::move(*fs) : nullptr;
}

void expect_clean(FileSystem& fs) {
    const FsckReport r = run_now(fs.check());
    std::string all;
    for (const auto& p : r.problems) all += p + "\n";
    EXPECT_TRUE(r.problems.empty()) << all;
}

TEST(FileSystemTest, MkfsMakesAnEmptyCleanFileSystem) {
    MemoryBlockIo io(4096);
    auto g = run_now(mkfs(io));
    ASSERT_TRUE(g.has_value());
    EXPECT_EQ(g->blocks, 4096u);
    auto fs = mount(io);
    ASSERT_TRUE(fs);
    EXPECT_FALSE(fs->replayed());
    expect_clean(*fs);
    auto root = run_now(fs->list("/"));
    ASSERT_TRUE(root.has_value());
    EXPECT_TRUE(root->empty());
}

TEST(FileSystemTest, NotAFileSystemIsRefused) {
    MemoryBlockIo io(4096);
    auto fs = run_now(FileSystem::mount(io));
    ASSERT_FALSE(fs.has_value());
    EXPECT_EQ(fs.error(), FsError::corrupt);
    MemoryBlockIo tiny(100);
    EXPECT_EQ(run_now(mkfs(tiny)).error(), FsError::no_space);
}

TEST(FileSystemTest, BadPathsAndNamesAreRefused) {
    MemoryBlockIo io(4096);
    ASSERT_TRUE(run_now(mkfs(io)).has_value());
    auto fs = mount(io);
    EXPECT_EQ(run_now(fs->mkdir("relative")).error(), FsError::bad_path);
    EXPECT_EQ(run_now(fs->mkdir("/a//b")).error(), FsError::bad_path);
    EXPECT_EQ(run_now(fs->mkdir("/a/../b")).error(), FsError::bad_path);
    EXPECT_EQ(run_now(fs->mkdir("/" + std::string(k_max_name + 1, 'x'))).error(),
              FsError::name_too_long);
    EXPECT_TRUE(run_now(fs->mkdir("/" + std::string(k_max_name, 'x'))).has_value());
    std::string deep;
    while (deep.size() <= k_max_path) deep += "/abcdefgh";
    EXPECT_EQ(run_now(fs->stat(deep)).error(), FsError::name_too_long);
    EXPECT_EQ(run_now(fs->remove("/")).error(), FsError::busy);
    EXPECT_EQ(run_now(fs->write("/big", 0, bytes("x"))).error(), FsError::not_found);
    expect_clean(*fs);
}

TEST(FileSystemTest, RandomOperationsMatchTheModel) {
    MemoryBlockIo io(16384);  // 64 MiB
    ASSERT_TRUE(run_now(mkfs(io)).has_value());
    auto fs = mount(io);
    ASSERT_TRUE(fs);
    Model model;
    Driver driver(20261125);
    for (int round = 0; round < 8; ++round) {
        for (int i = 0; i < 500; ++i) {
            driver.step(*fs, model);
            if (testing::Test::HasFatalFailure()) return;
        }
        // A remount sees exactly what the operations left, and checks clean.
        fs = mount(io);
        ASSERT_TRUE(fs);
        expect_clean(*fs);
        const Tree have = dump(*fs);
        ASSERT_TRUE(same(have, model.tree())) << "fs:\n"
                                              << describe(have) << "model:\n"
                                              << describe(model.tree());
    }
    EXPECT_GE(model.tree().size(), 5u);
    // Every kind of operation got through often, not only its errors.
    for (const char* op :
         {"mkdir", "create", "write", "append", "truncate", "rename", "remove", "read"}) {
        EXPECT_GE(driver.m_succeeded[op], 20) << op;
    }
}

TEST(FileSystemTest, ACrashAtAnyWriteLeavesTheStateBeforeOrAfterTheOperation) {
    std::mt19937 rng(7);
    int replays = 0;
    for (int trial = 0; trial < 60; ++trial) {
        MemoryBlockIo io(8192);
        ASSERT_TRUE(run_now(mkfs(io)).has_value());
        auto fs = mount(io);
        Model model;
        Driver driver(static_cast<std::uint32_t>(1000 + trial));
        // Some history first, then the device dies at a random write.
        for (int i = 0; i < 40; ++i) driver.step(*fs, model);
        io.crash_after(static_cast<std::int64_t>(rng() % 400));
        Tree before = model.tree();
        while (!io.crashed()) {
            before = model.tree();
            driver.step(*fs, model);
            if (testing::Test::HasFatalFailure()) return;
        }
        // The image as the power went.
        MemoryBlockIo after(8192);
        after.data() = io.data();
        auto again = mount(after);
        ASSERT_TRUE(again) << "trial " << trial;
        replays += again->replayed() ? 1 : 0;
        expect_clean(*again);
        const Tree have = dump(*again);
        EXPECT_TRUE(same(have, before) || same(have, model.tree()))
            << "trial " << trial << "\nfs:\n"
            << describe(have) << "before:\n"
            << describe(before) << "after:\n"
            << describe(model.tree());
    }
    // Some crashes fell between a commit and the writes home: replayed.
    EXPECT_GT(replays, 0);
}

}  // namespace
}  // namespace hmk::fs
