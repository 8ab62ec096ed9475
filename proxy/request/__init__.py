"""The request path, one stage per module, in the order a request meets them: `flow` runs them
(parse, classify, plan, guard, admit, attempt with `relay`, account) and `outcome` is what they leave.
Nothing is imported here, so each stage is imported alone where needed."""
