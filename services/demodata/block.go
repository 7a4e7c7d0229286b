package demodata

import "fmt"

// Block kinds: how the four citizens of a block live.
const (
	kindFamily       = iota // head, spouse, two children
	kindCouple              // a couple; two people living alone
	kindSingleParent        // a parent and three children
	kindAlone               // four people living alone
)

func kindOf(r rng) int {
	switch k := r.n(1, 10); {
	case k < 6:
		return kindFamily
	case k < 8:
		return kindCouple
	case k < 9:
		return kindSingleParent
	default:
		return kindAlone
	}
}

// Block returns the four citizens of block b.
func Block(seed uint64, b int) [4]Citizen {
	r := rng{seed, uint64(b)}
	var cs [4]Citizen
	for k := range cs {
		cs[k].Index = b*4 + k
		cs[k].EID = EID(seed, b*4+k)
		cs[k].Marital = Single
		cs[k].Relation = Head
	}
	kind := kindOf(r)
	hh := func(k int) string { return fmt.Sprintf("HH-%07d-%d", b, k) }

	person := func(k, sex, year int) {
		c := &cs[k]
		pr := rng{seed, uint64(c.Index) << 8}
		c.Sex = sex
		g := maleGiven
		if sex == Female {
			g = femaleGiven
		}
		n := pr.n(2, len(g))
		c.GivenLatin, c.GivenArabic = g[n][0], g[n][1]
		f := pr.n(3, len(family))
		c.FamilyLatin, c.FamilyArabic = family[f][0], family[f][1]
		c.Birth = pr.date(4, year)
		p := places[pr.n(6, len(places))]
		c.Commune, c.Province = p[0], p[1]
		c.FatherName = maleGiven[pr.n(7, len(maleGiven))][0] + " " + c.FamilyLatin
		c.MotherName = femaleGiven[pr.n(8, len(femaleGiven))][0] + " " + family[pr.n(9, len(family))][0]
	}
	child := func(k int, father, mother *Citizen) {
		pr := rng{seed, uint64(b*4+k) << 8}
		year := mother.Birth.Y + 20 + pr.n(10, 18)
		if year > today.Y-1 {
			year = today.Y - 1
		}
		person(k, Female+pr.n(11, 2), year)
		c := &cs[k]
		c.FamilyLatin, c.FamilyArabic = father.FamilyLatin, father.FamilyArabic
		c.FatherName, c.MotherName = father.FullNameLatin(), mother.FullNameLatin()
		if father == mother { // single parent: the father is not in the register block
			c.FatherName = maleGiven[pr.n(12, len(maleGiven))][0] + " " + father.FamilyLatin
		}
		c.Relation = Child
	}
	couple := func() {
		headYear := 1940 + r.n(2, 50)
		person(0, Male, headYear)
		person(1, Female, headYear+r.n(3, 8)-2)
		cs[0].Marital, cs[1].Marital = Married, Married
		cs[1].Relation = Spouse
		switch d := r.n(4, 100); {
		case d < 4: // the head died: the spouse is a widow
			cs[0].Deceased, cs[1].Marital = true, Widowed
		case d < 7:
			cs[1].Deceased, cs[0].Marital = true, Widowed
		}
	}
	alone := func(k int) {
		pr := rng{seed, uint64(b*4+k) << 8}
		person(k, Female+pr.n(20, 2), 1935+pr.n(21, 72))
		c := &cs[k]
		if c.Age() > 30 && pr.pct(22, 40) {
			c.Marital = Divorced + pr.n(23, 2) // divorced or widowed
		}
		if c.Birth.Y < 1960 && pr.pct(24, 35) {
			c.Deceased = true
		}
		c.Household, c.Members = hh(k), []int{c.Index}
	}

	switch kind {
	case kindFamily:
		couple()
		child(2, &cs[0], &cs[1])
		child(3, &cs[0], &cs[1])
		for k := range cs {
			cs[k].Household = hh(0)
			cs[k].Members = []int{b * 4, b*4 + 1, b*4 + 2, b*4 + 3}
		}
	case kindCouple:
		couple()
		for k := 0; k < 2; k++ {
			cs[k].Household, cs[k].Members = hh(0), []int{b * 4, b*4 + 1}
		}
		alone(2)
		alone(3)
	case kindSingleParent:
		person(0, Female, 1950+r.n(5, 40))
		cs[0].Marital = Divorced + r.n(6, 2)
		for k := 1; k < 4; k++ {
			child(k, &cs[0], &cs[0])
		}
		for k := range cs {
			cs[k].Household = hh(0)
			cs[k].Members = []int{b * 4, b*4 + 1, b*4 + 2, b*4 + 3}
		}
	default:
		for k := range cs {
			alone(k)
		}
	}
	for k := range cs {
		finish(seed, &cs[k])
	}
	insure(cs[:])
	return cs
}

// finish fills in each ministry's facts about one person.
func finish(seed uint64, c *Citizen) {
	pr := rng{seed, uint64(c.Index)<<8 | 0x55}
	if c.Deceased {
		y := c.Birth.Y + 55 + pr.n(30, 30)
		if y > today.Y {
			y = today.Y
		}
		if y <= c.Birth.Y {
			y = c.Birth.Y + 1
		}
		c.Death = pr.date(31, y)
		if today.Before(c.Death) {
			c.Death = Date{today.Y, 1, 15}
		}
	}
	c.RegistrationYear = c.Birth.Y
	c.RegistryOffice = "Bureau d'état civil de " + c.Commune
	c.ActNumber = fmt.Sprintf("%d/%d", 1+pr.n(32, 9000), c.Birth.Y)

	age := c.Age()
	switch w := pr.n(33, 100); {
	case c.Deceased || age < 18:
		c.Work = NoWork
	case age >= 65:
		if w < 55 {
			c.Work = Retired
		}
	case w < 45:
		c.Work = Employee
	case w < 60:
		c.Work = SelfEmployed
	case w < 68:
		c.Work = PublicServant
	}
	switch c.Work {
	case Employee, PublicServant:
		c.Employer = employers[pr.n(34, len(employers))]
		if c.Work == PublicServant {
			c.Employer = "Administration publique"
		}
		c.MonthlySalary = int64(3000+pr.n(35, 22000)) * 100
	case SelfEmployed:
		c.MonthlySalary = int64(2000+pr.n(36, 30000)) * 100
	case Retired:
		c.MonthlySalary = int64(1500+pr.n(37, 6000)) * 100
	}
	if c.Work != NoWork && c.Work != PublicServant {
		start := c.Birth.Y + 20 + pr.n(38, 10)
		if start > today.Y {
			start = today.Y
		}
		c.AffiliationDate = pr.date(39, start)
	}
	c.GoodStanding = true
	for y := 0; y < NYears; y++ {
		in := &c.Incomes[y]
		if c.MonthlySalary == 0 || c.Deceased || c.Birth.Y+18 > FirstYear+y || !pr.pct(uint64(40+y), 90) {
			continue
		}
		in.Declared = true
		annual := c.MonthlySalary * 12 * int64(95+pr.n(uint64(50+y), 11)) / 100
		if c.Work == SelfEmployed {
			in.Professional = annual
		} else {
			in.Salary = annual
		}
		if pr.pct(uint64(60+y), 10) {
			in.Rental = int64(12000+pr.n(uint64(70+y), 60000)) * 100
		}
		if pr.pct(uint64(80+y), 5) {
			in.Agricultural = int64(5000+pr.n(uint64(90+y), 40000)) * 100
		}
		in.TaxDue = incomeTax(in.Total())
		in.TaxPaid = in.TaxDue
		in.Filed = Date{FirstYear + y + 1, 2 + pr.n(uint64(100+y), 3), 1 + pr.n(uint64(110+y), 28)}
	}
	if c.Work == SelfEmployed && pr.pct(120, 20) {
		last := &c.Incomes[NYears-1]
		if last.Declared && last.TaxDue > 0 {
			last.TaxPaid = last.TaxDue / 2
			c.GoodStanding = false
			c.Outstanding = last.TaxDue - last.TaxPaid
		}
	}
	if !c.Deceased && pr.pct(121, 4) {
		c.Disability = true
		c.DisabilityDegree = 20 + 5*pr.n(122, 17)
		c.DisabilityKind = 1 + pr.n(123, 5)
		c.DisabilityCard = fmt.Sprintf("CH-%07d", pr.n(124, 10_000_000))
		c.Assessed = pr.date(125, 2015+pr.n(126, 10))
	}
}

// incomeTax is a simplified progressive scale (centimes).
func incomeTax(total int64) int64 {
	mad := total / 100
	brackets := []struct{ upTo, pct int64 }{{40000, 0}, {60000, 10}, {80000, 20}, {100000, 30}, {180000, 34}, {1 << 62, 37}}
	var tax, prev int64
	for _, br := range brackets {
		if mad <= prev {
			break
		}
		top := min(mad, br.upTo)
		tax += (top - prev) * br.pct / 100
		prev = br.upTo
	}
	return tax * 100
}

// LowIncomeThreshold is the AMO Tadamon means test used by the demo (MAD/year).
const LowIncomeThreshold = 60000 * 100

// insure decides AMO coverage for one household block: workers are covered
// by their own scheme, their household by theirs, and low-income
// households by AMO Tadamon.
func insure(cs []Citizen) {
	byIndex := map[int]*Citizen{}
	for k := range cs {
		byIndex[cs[k].Index] = &cs[k]
	}
	own := func(c *Citizen) int {
		switch c.Work {
		case Employee, Retired:
			return AMOSalaried
		case SelfEmployed:
			if c.GoodStanding {
				return AMOSelfEmployed
			}
		}
		return AMONone
	}
	for k := range cs {
		c := &cs[k]
		c.AMOScheme = own(c)
		c.CNOPS = c.Work == PublicServant
		if c.AMOScheme != AMONone || c.CNOPS {
			continue
		}
		var income int64
		for _, m := range c.Members {
			o := byIndex[m]
			income += o.Incomes[NYears-1].Total()
			if o == c || o.Deceased || o.Relation == Child {
				continue
			}
			if s := own(o); s != AMONone {
				c.AMOScheme, c.Beneficiary = s, true
			}
			if o.Work == PublicServant {
				c.CNOPS, c.Beneficiary = true, true
			}
		}
		if c.AMOScheme == AMONone && !c.CNOPS && income < LowIncomeThreshold {
			c.AMOScheme = AMOTadamon
		}
	}
	for k := range cs {
		c := &cs[k]
		c.AMOCovered = !c.Deceased && c.AMOScheme != AMONone
		if c.Deceased {
			c.AMOScheme, c.Beneficiary = AMONone, false
		}
	}
}
