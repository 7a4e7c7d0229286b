package demodata

import (
	"fmt"
	"math/big"
	"strings"
)

// DefaultSeed is the seed of the demo federation.
const DefaultSeed = 1

// Years of tax data.
const (
	FirstYear = 2019
	LastYear  = 2025
	NYears    = LastYear - FirstYear + 1
)

// today is the reference date of the synthetic world.
var today = Date{2025, 11, 1}

// Today returns the reference date of the synthetic world ("today").
func Today() Date { return today }

// Sex.
const (
	Female = 1
	Male   = 2
)

// Marital status (the civil registry's enum values).
const (
	Single   = 1
	Married  = 2
	Divorced = 3
	Widowed  = 4
)

// Relation to the household head.
const (
	Head   = 1
	Spouse = 2
	Child  = 3
)

// Work.
const (
	NoWork = iota
	Employee
	SelfEmployed
	Retired
	PublicServant
)

// AMO schemes (the CNSS enum values).
const (
	AMOSalaried     = 1
	AMOTadamon      = 2
	AMOSelfEmployed = 3
	AMONone         = 4
)

// Date is a calendar date.
type Date struct{ Y, M, D int }

func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Y, d.M, d.D) }

// Before reports whether d is before e.
func (d Date) Before(e Date) bool {
	return d.Y < e.Y || d.Y == e.Y && (d.M < e.M || d.M == e.M && d.D < e.D)
}

// Income is one year's declaration (amounts in centimes of MAD).
type Income struct {
	Declared                                            bool
	Salary, Professional, Agricultural, Rental, Capital int64
	TaxDue, TaxPaid                                     int64
	Filed                                               Date
}

// Total is the declared total income.
func (in Income) Total() int64 {
	return in.Salary + in.Professional + in.Agricultural + in.Rental + in.Capital
}

// Citizen is one synthetic person as every ministry knows them.
type Citizen struct {
	Index int
	EID   string
	Sex   int
	// Latin and Arabic script.
	GivenLatin, FamilyLatin, GivenArabic, FamilyArabic string
	Birth                                              Date
	Commune, Province                                  string
	Deceased                                           bool
	Death                                              Date
	Marital                                            int
	Household                                          string
	Relation                                           int
	Members                                            []int // indices of the household, head first
	FatherName, MotherName                             string
	ActNumber, RegistryOffice                          string
	RegistrationYear                                   int

	Work            int
	Employer        string
	AffiliationDate Date
	MonthlySalary   int64 // centimes
	Incomes         [NYears]Income
	GoodStanding    bool
	Outstanding     int64

	AMOScheme   int  // own or through the household head
	AMOCovered  bool // covered today
	CNOPS       bool // public-sector insurance instead of CNSS
	Beneficiary bool // covered through the household head

	Disability       bool
	DisabilityDegree int
	DisabilityKind   int // 1 motor … 5 multiple
	DisabilityCard   string
	Assessed         Date
}

// Age in whole years at today.
func (c *Citizen) Age() int {
	a := today.Y - c.Birth.Y
	if today.Before(Date{today.Y, c.Birth.M, c.Birth.D}) {
		a--
	}
	return a
}

// Alive reports whether the citizen is alive.
func (c *Citizen) Alive() bool { return !c.Deceased }

// FullNameLatin is "Given Family".
func (c *Citizen) FullNameLatin() string { return c.GivenLatin + " " + c.FamilyLatin }

// Blocks returns how many blocks of four hold n citizens.
func Blocks(n int) int { return (n + 3) / 4 }

// Population rounds n up to whole blocks.
func Population(n int) int { return Blocks(n) * 4 }

// Get returns citizen i.
func Get(seed uint64, i int) Citizen {
	b := Block(seed, i/4)
	return b[i%4]
}

// NormaliseEID trims ASCII spaces and upper-cases ASCII letters, as the
// federation's eID format does (docs/integrate.md, "The eID"). Any byte
// outside ASCII gives "" (no such eID): Unicode upper-casing would map
// "nſ389813" to "NS389813", a second spelling of another citizen's eID.
func NormaliseEID(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return ""
		}
	}
	return strings.ToUpper(strings.TrimSpace(s))
}

// ---- eIDs ----

const digitsSpace = 1_000_000

var (
	scrambleMul = int64(7919)
	scrambleInv = new(big.Int).ModInverse(big.NewInt(scrambleMul), big.NewInt(digitsSpace)).Int64()
)

func pair(k int) string { return string([]byte{byte('A' + k/26), byte('A' + k%26)}) }

// EID returns citizen i's eID: two letters and six digits, unique for
// i < 676,000,000 and not sequential.
func EID(seed uint64, i int) string {
	b, r := i/digitsSpace, int64(i%digitsSpace)
	d := (r*scrambleMul + int64(seed%digitsSpace)*104729) % digitsSpace
	letters := (b + int(d)*7 + int(seed%676)) % 676
	return fmt.Sprintf("%s%06d", pair(letters), d)
}

// Index returns the citizen index of an eID, if it is one of seed's.
func Index(seed uint64, eid string) (int, bool) {
	eid = NormaliseEID(eid)
	if len(eid) != 8 || eid[0] < 'A' || eid[0] > 'Z' || eid[1] < 'A' || eid[1] > 'Z' {
		return 0, false
	}
	var d int64
	for _, c := range eid[2:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		d = d*10 + int64(c-'0')
	}
	letters := int(eid[0]-'A')*26 + int(eid[1]-'A')
	b := ((letters-int(d)*7-int(seed%676))%676 + 676) % 676
	r := ((d - int64(seed%digitsSpace)*104729%digitsSpace + digitsSpace) % digitsSpace) * scrambleInv % digitsSpace
	i := b*digitsSpace + int(r)
	if EID(seed, i) != eid {
		return 0, false
	}
	return i, true
}

// ---- randomness: a pure function of (seed, block or index, salt) ----

func mix(x uint64) uint64 { // splitmix64 finaliser
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

type rng struct{ seed, key uint64 }

func (r rng) n(salt uint64, m int) int {
	return int(mix(r.seed*0x100000001b3^r.key*0x9e3779b97f4a7c15^salt) % uint64(m))
}

func (r rng) pct(salt uint64, p int) bool { return r.n(salt, 100) < p }

func (r rng) date(salt uint64, year int) Date {
	return Date{year, 1 + r.n(salt, 12), 1 + r.n(salt+1, 28)}
}
