// SPDX-License-Identifier: Apache-2.0
#include "hmk/topology.hpp"

#include <algorithm>
#include <string>

namespace hmk {
namespace {

TopologyError error(TopologyError::Kind kind, std::string path, std::string detail) {
    return TopologyError{kind, std::move(path), std::move(detail)};
}

std::string fmt_path(const std::string& path) {
    return path == "/" ? std::string("/ (Bus 0)") : path;
}

}  // namespace

Result<Topology, TopologyError> Topology::build(std::vector<ModuleDecl> decls) {
    using Kind = TopologyError::Kind;

    // Paths: well formed, not the root, unique.
    std::unordered_map<std::string, std::size_t, PathHash, std::equal_to<>> by_path;
    for (std::size_t i = 0; i < decls.size(); ++i) {
        const std::string& path = decls[i].path;
        PathError why{};
        if (!is_valid_path(path, &why)) {
            return Err{error(Kind::bad_path, path, to_string(why))};
        }
        if (path == "/") {
            return Err{
                error(Kind::root_declared, path,
                      "'/' is the microkernel; it is part of every system and is not declared")};
        }
        if (!by_path.emplace(path, i).second) {
            return Err{error(Kind::duplicate_path, path, "module path declared twice")};
        }
    }

    // Ids: explicit ones checked, the others assigned in declaration order.
    std::unordered_map<ModuleId, std::size_t> by_id;
    ModuleId next_id = k_root_id + 1;
    for (std::size_t i = 0; i < decls.size(); ++i) {
        const ModuleId id = decls[i].id;
        if (id == k_no_module) continue;
        if (id == k_root_id || id > k_max_module_id) {
            return Err{error(Kind::bad_id, decls[i].path,
                             "id " + std::to_string(id) + " is reserved or out of range (2.." +
                                 std::to_string(k_max_module_id) + ")")};
        }
        if (!by_id.emplace(id, i).second) {
            return Err{
                error(Kind::duplicate_id, decls[i].path,
                      "id " + std::to_string(id) + " is already used by " + decls[by_id[id]].path)};
        }
        next_id = std::max(next_id, id + 1);
    }
    for (auto& decl : decls) {
        if (decl.id != k_no_module) continue;
        if (next_id > k_max_module_id) {
            return Err{error(Kind::bad_id, decl.path, "no module id left to assign")};
        }
        decl.id = next_id++;
    }

    // Parents: declared, and gateways.
    std::vector<std::vector<std::size_t>> children_of(decls.size() + 1);  // last slot: root
    const std::size_t root_slot = decls.size();
    for (std::size_t i = 0; i < decls.size(); ++i) {
        const std::string_view parent = parent_path(decls[i].path);
        if (parent == "/") {
            children_of[root_slot].push_back(i);
            continue;
        }
        const auto it = by_path.find(parent);
        if (it == by_path.end()) {
            return Err{error(Kind::missing_parent, decls[i].path,
                             "its parent " + std::string(parent) + " is not declared")};
        }
        if (decls[it->second].role != Role::gateway) {
            return Err{error(
                Kind::parent_not_gateway, decls[i].path,
                "its parent " + std::string(parent) + " is not a gateway and so has no child bus")};
        }
        children_of[it->second].push_back(i);
    }

    // Preorder walk from the root. The declarations form a tree by construction
    // (a parent's path is a strict prefix of its child's), so this terminates.
    Topology topo;
    topo.m_nodes.reserve(decls.size() + 1);
    struct Frame {
        std::size_t slot;
        ModuleId parent;
        std::uint32_t level;
    };
    std::vector<Frame> stack{{root_slot, k_no_module, 0}};
    while (!stack.empty()) {
        const Frame f = stack.back();
        stack.pop_back();
        TopologyNode n;
        if (f.slot == root_slot) {
            n.id = k_root_id;
            n.path = "/";
            n.role = Role::gateway;
        } else {
            n.id = decls[f.slot].id;
            n.path = std::move(decls[f.slot].path);
            n.role = decls[f.slot].role;
        }
        n.parent = f.parent;
        n.level = f.level;
        n.pre = static_cast<std::uint32_t>(topo.m_nodes.size());
        const auto& kids = children_of[f.slot];
        for (auto it = kids.rbegin(); it != kids.rend(); ++it) {
            stack.push_back({*it, n.id, f.level + 1});
        }
        topo.m_nodes.push_back(std::move(n));
    }
    for (std::uint32_t i = 0; i < topo.m_nodes.size(); ++i) {
        topo.m_index_by_id.emplace(topo.m_nodes[i].id, i);
        topo.m_index_by_path.emplace(topo.m_nodes[i].path, i);
    }
    // Children lists and subtree ends, deepest first.
    for (std::size_t i = topo.m_nodes.size(); i-- > 0;) {
        TopologyNode& n = topo.m_nodes[i];
        n.last = std::max(n.last, n.pre);
        if (n.parent == k_no_module) continue;
        TopologyNode& p = topo.m_nodes[topo.m_index_by_id.at(n.parent)];
        p.children.insert(p.children.begin(), n.id);
        p.last = std::max(p.last, n.last);
    }
    return topo;
}

const TopologyNode* Topology::node(ModuleId id) const {
    const auto it = m_index_by_id.find(id);
    return it == m_index_by_id.end() ? nullptr : &m_nodes[it->second];
}

const TopologyNode* Topology::find(ModuleId id) const {
    return node(id);
}

const TopologyNode* Topology::find(std::string_view path) const {
    const auto it = m_index_by_path.find(path);
    return it == m_index_by_path.end() ? nullptr : &m_nodes[it->second];
}

bool Topology::in_subtree(ModuleId id, ModuleId ancestor) const {
    const TopologyNode* n = node(id);
    const TopologyNode* a = node(ancestor);
    if (n == nullptr || a == nullptr) return false;
    return n->pre >= a->pre && n->pre <= a->last;
}

BusId Topology::home_bus(ModuleId id) const {
    const TopologyNode* n = node(id);
    if (n == nullptr) return k_no_module;
    return n->parent == k_no_module ? n->id : n->parent;
}

std::vector<BusId> Topology::route_buses(ModuleId from, ModuleId to) const {
    std::vector<BusId> buses;
    const TopologyNode* dest = node(to);
    BusId bus = home_bus(from);
    if (dest == nullptr || bus == k_no_module) return buses;
    // A gateway reaches its own descendants directly on its child bus.
    if (to != from && in_subtree(to, from)) bus = from;
    // Up until the bus owner's subtree holds the destination...
    while (!in_subtree(to, bus)) {
        buses.push_back(bus);
        bus = node(bus)->parent;
    }
    // ...then down along the destination's ancestors to the bus it sits on.
    std::vector<BusId> down;
    if (to != bus) {
        for (BusId b = dest->parent; b != bus; b = node(b)->parent) down.push_back(b);
    }
    buses.push_back(bus);
    buses.insert(buses.end(), down.rbegin(), down.rend());
    return buses;
}

std::vector<ModuleId> Topology::attached(BusId bus) const {
    std::vector<ModuleId> ids;
    const TopologyNode* owner = node(bus);
    if (owner == nullptr || !owner->is_gateway()) return ids;
    ids.push_back(owner->id);
    ids.insert(ids.end(), owner->children.begin(), owner->children.end());
    return ids;
}

Result<Topology, std::string> Topology::moved(ModuleId id, ModuleId new_parent) const {
    const TopologyNode* n = find(id);
    const TopologyNode* to = find(new_parent);
    if (n == nullptr || id == k_root_id) return Err{std::string("the microkernel cannot be moved")};
    if (to == nullptr) return Err{std::string("no such gateway")};
    if (!to->is_gateway()) return Err{to->path + " is not a gateway (it owns no bus)"};
    if (in_subtree(new_parent, id))
        return Err{fmt_path(to->path) + " lies in " + n->path + "'s own subtree"};
    if (n->parent == new_parent)
        return Err{n->path + " is attached to " + fmt_path(to->path) + " already"};
    const std::string name(base_name(n->path));
    const std::string new_path = (new_parent == k_root_id ? std::string() : to->path) + "/" + name;
    if (find(new_path) != nullptr) return Err{new_path + " exists already"};
    std::vector<ModuleDecl> decls;
    std::vector<ModuleDecl> subtree;
    for (const TopologyNode& m : m_nodes) {
        if (m.id == k_root_id) continue;
        if (in_subtree(m.id, id)) {
            subtree.push_back({m.id, new_path + m.path.substr(n->path.size()), m.role});
        } else {
            decls.push_back({m.id, m.path, m.role});
        }
    }
    decls.insert(decls.end(), subtree.begin(), subtree.end());
    auto built = build(std::move(decls));
    if (!built) return Err{built.error().path + ": " + built.error().detail};
    return std::move(built).value();
}

}  // namespace hmk
