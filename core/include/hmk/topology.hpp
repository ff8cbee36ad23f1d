// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hmk/ids.hpp"
#include "hmk/path.hpp"
#include "hmk/result.hpp"

namespace hmk {

/// Whether a module may own a child bus.
enum class Role : std::uint8_t { leaf, gateway };

/// One module as declared, before the tree is checked.
struct ModuleDecl {
    ModuleId id = k_no_module;
    std::string path;
    Role role = Role::leaf;
};

/// One module of a checked tree.
struct TopologyNode {
    ModuleId id = k_no_module;
    std::string path;
    Role role = Role::leaf;
    ModuleId parent = k_no_module;   ///< owner of the bus this module is attached to
    std::uint32_t level = 0;         ///< buses between this module and the root
    std::vector<ModuleId> children;  ///< modules attached to this module's child bus
    std::uint32_t pre = 0;           ///< preorder index
    std::uint32_t last = 0;          ///< largest preorder index in this subtree

    bool is_gateway() const { return role == Role::gateway; }
};

struct TopologyError {
    enum class Kind : std::uint8_t {
        bad_path = 1,
        duplicate_path,
        duplicate_id,
        bad_id,  ///< 0, the root's id used by another module, or out of range
        missing_parent,
        parent_not_gateway,
        root_declared,  ///< "/" is the microkernel and is implicit
    };
    Kind kind;
    std::string path;    ///< the module the error is about
    std::string detail;  ///< human-readable reason
};

/// The checked module tree: one root (the microkernel, id k_root_id, path "/",
/// owner of Bus 0), every other module attached to exactly one parent bus,
/// which is owned by a gateway; names unique among siblings. Immutable once
/// built; relocation builds a new one.
class Topology {
  public:
    /// Checks the invariants and builds the tree. `decls` must not contain "/".
    /// Module ids of 0 are assigned in declaration order after the largest given id.
    static Result<Topology, TopologyError> build(std::vector<ModuleDecl> decls);

    /// This tree with module `id` (and its subtree) moved under gateway
    /// `new_parent`: the same ids, new paths (the moved module becomes the
    /// last child of `new_parent`). Error: the root, an unknown module, a
    /// parent that is not a gateway, is `id` itself or lies in its subtree,
    /// or a sibling there with the same name.
    Result<Topology, std::string> moved(ModuleId id, ModuleId new_parent) const;

    const TopologyNode* find(ModuleId id) const;
    const TopologyNode* find(std::string_view path) const;
    const TopologyNode& root() const { return m_nodes.front(); }
    /// Every module, the root first, in preorder (parents before children).
    const std::vector<TopologyNode>& nodes() const { return m_nodes; }
    std::size_t size() const { return m_nodes.size(); }

    /// True when `id` is `ancestor` or lies below it. O(1).
    bool in_subtree(ModuleId id, ModuleId ancestor) const;
    /// The bus a module sends on by default: its parent bus, or Bus 0 for the root.
    BusId home_bus(ModuleId id) const;
    /// The buses an addressed message from `from` to `to` crosses, in order. A
    /// module sends on its home bus, except that a gateway addressing one of
    /// its descendants sends on its own child bus.
    std::vector<BusId> route_buses(ModuleId from, ModuleId to) const;
    /// The modules attached to `bus`: its owner and the owner's children.
    std::vector<ModuleId> attached(BusId bus) const;

  private:
    const TopologyNode* node(ModuleId id) const;

    std::vector<TopologyNode> m_nodes;  // preorder
    struct PathHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<ModuleId, std::uint32_t> m_index_by_id;
    std::unordered_map<std::string, std::uint32_t, PathHash, std::equal_to<>> m_index_by_path;
};

}  // namespace hmk
