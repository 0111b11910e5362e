#include "replication/membership.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace walship::replication {

const Member* Membership::Find(absl::string_view id) const {
  for (const Member& m : members) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

std::vector<std::string> Membership::VotersExcept(absl::string_view self) const {
  std::vector<std::string> out;
  for (const Member& m : members) {
    if (m.voter && m.id != self) out.push_back(m.id);
  }
  return out;
}

size_t Membership::Majority() const {
  size_t voters = 0;
  for (const Member& m : members) voters += m.voter ? 1 : 0;
  return voters / 2 + 1;
}

std::string Describe(const MembershipChange& c) {
  switch (c.op) {
    case MembershipOp::kAddLearner:
      return absl::StrCat("add ", c.id, " (", c.address, ") as a learner");
    case MembershipOp::kPromote: return absl::StrCat("make ", c.id, " a voter");
    case MembershipOp::kRemove: return absl::StrCat("remove ", c.id);
  }
  return "?";
}

std::string Describe(const Membership& m) {
  std::string out;
  for (const Member& n : m.members) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", n.id, n.voter ? " voter" : " learner",
                    n.address.empty() ? "" : " ", n.address);
  }
  return out.empty() ? "none" : out;
}

absl::Status CheckNodeId(absl::string_view id) {
  if (id.empty() || id.size() > 64 || id == "-" ||
      id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
          absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node id '", id, "' must be 1 to 64 letters, digits, '.', '_' or '-' (and not \"-\" "
        "alone)"));
  }
  return absl::OkStatus();
}

absl::Status CheckAddress(absl::string_view address) {
  size_t colon = address.rfind(':');
  uint32_t port = 0;
  bool printable = std::all_of(address.begin(), address.end(),
                               [](char c) { return c > ' ' && c < 0x7f; });
  if (address.size() > 255 || !printable || colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "address '", address, "' is not host:port with a port in 1-65535"));
  }
  return absl::OkStatus();
}

absl::Status ValidateMembership(const Membership& m) {
  for (size_t i = 0; i < m.members.size(); ++i) {
    const Member& n = m.members[i];
    if (absl::Status s = CheckNodeId(n.id); !s.ok()) return s;
    if (n.address.find_first_of(" \n\t") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("member ", n.id, ": address '", n.address, "' holds a space"));
    }
    if (i > 0 && m.members[i - 1].id >= n.id) {
      return absl::InvalidArgumentError(absl::StrCat(
          "members out of order or repeated: '", m.members[i - 1].id, "' then '", n.id, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Membership> ApplyChange(const Membership& m, const MembershipChange& c,
                                       absl::string_view leader) {
  if (absl::Status s = CheckNodeId(c.id); !s.ok()) return s;
  Membership next = m;
  next.version = m.version + 1;
  const Member* found = m.Find(c.id);
  switch (c.op) {
    case MembershipOp::kAddLearner: {
      if (found != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", c.id, "' is a member already (", found->voter ? "voter" : "learner", ", ",
            found->address, ")"));
      }
      if (absl::Status s = CheckAddress(c.address); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("the ", s.message(), " ('", c.id, "')"));
      }
      for (const Member& n : m.members) {
        if (n.address == c.address) {
          return absl::InvalidArgumentError(absl::StrCat(
              "member '", n.id, "' listens on ", c.address, " already"));
        }
      }
      next.members.push_back(Member{c.id, c.address, false});
      std::sort(next.members.begin(), next.members.end(),
                [](const Member& a, const Member& b) { return a.id < b.id; });
      return next;
    }
    case MembershipOp::kPromote:
    case MembershipOp::kRemove: {
      if (found == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", c.id, "' is not a member (members: ", Describe(m), ")"));
      }
      if (c.op == MembershipOp::kRemove) {
        if (c.id == leader) {
          return absl::InvalidArgumentError(absl::StrCat(
              "'", c.id, "' leads: hand leadership to another node first (walship handover), "
              "then remove it"));
        }
        std::erase_if(next.members, [&](const Member& n) { return n.id == c.id; });
        return next;
      }
      if (found->voter) {
        return absl::InvalidArgumentError(absl::StrCat("'", c.id, "' votes already"));
      }
      for (Member& n : next.members) {
        if (n.id == c.id) n.voter = true;
      }
      return next;
    }
  }
  return absl::InternalError("unknown membership change");
}

Membership MembershipOf(std::vector<Member> members, uint64_t version) {
  Membership m;
  m.version = version;
  m.members = std::move(members);
  for (Member& n : m.members) n.voter = true;
  std::sort(m.members.begin(), m.members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  return m;
}

}  // namespace walship::replication
