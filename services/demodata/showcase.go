package demodata

// Example is a demo citizen with a one-line description.
type Example struct {
	EID         string
	Description string
}

// Showcase picks a handful of telling citizens, deterministically, among the
// first blocks of the population.
func Showcase(seed uint64) []Example {
	var out []Example
	seen := map[string]bool{}
	want := []struct {
		key, desc string
		match     func(c *Citizen) bool
	}{
		{"married", "married salaried worker, insured (AMO), declared income above the Tadamon threshold", func(c *Citizen) bool {
			return c.Alive() && c.Marital == Married && c.Work == Employee && c.AMOCovered && c.Incomes[NYears-1].Total() > LowIncomeThreshold
		}},
		{"deceased", "deceased pensioner: the civil registry records the death", func(c *Citizen) bool {
			return c.Deceased && c.Age() > 60
		}},
		{"tadamon", "low-income household head covered by AMO Tadamon", func(c *Citizen) bool {
			return c.Alive() && c.Relation == Head && c.AMOScheme == AMOTadamon && len(c.Members) > 1
		}},
		{"disability", "person with a recognised disability", func(c *Citizen) bool {
			return c.Alive() && c.Disability && c.Age() >= 18
		}},
		{"selfemployed", "self-employed, not in good tax standing", func(c *Citizen) bool {
			return c.Alive() && c.Work == SelfEmployed && !c.GoodStanding
		}},
		{"guardian", "parent of a minor child: acts for the child on the citizen's page (assisted access)", func(c *Citizen) bool {
			if !c.Alive() || c.Relation != Head {
				return false
			}
			for _, i := range c.Members {
				// Under 16 at the world's reference date: still a minor for a while.
				if k := Get(seed, i); k.Relation == Child && k.Alive() && k.Age() >= 1 && k.Age() < 16 {
					return true
				}
			}
			return false
		}},
	}
	found := make([]*Example, len(want))
	for b := 0; b < 2500 && len(seen) < len(want); b++ {
		blk := Block(seed, b)
		for k := range blk {
			c := &blk[k]
			for i, w := range want {
				if !seen[w.key] && w.match(c) {
					seen[w.key] = true
					found[i] = &Example{EID: c.EID, Description: w.desc}
					break
				}
			}
		}
	}
	for _, e := range found { // in the order of want: the first is the demo's main citizen
		if e != nil {
			out = append(out, *e)
		}
	}
	return out
}
