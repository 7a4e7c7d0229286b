package demodata

// Parallel lists: the Arabic spelling at index i is the Latin name's.

var maleGiven = [][2]string{
	{"Mohammed", "محمد"}, {"Ahmed", "أحمد"}, {"Youssef", "يوسف"}, {"Hassan", "حسن"}, {"Omar", "عمر"},
	{"Abdellah", "عبد الله"}, {"Mustapha", "مصطفى"}, {"Karim", "كريم"}, {"Rachid", "رشيد"}, {"Said", "سعيد"},
	{"Hamza", "حمزة"}, {"Mehdi", "مهدي"}, {"Anas", "أنس"}, {"Ayoub", "أيوب"}, {"Ismail", "إسماعيل"},
	{"Khalid", "خالد"}, {"Driss", "إدريس"}, {"Brahim", "إبراهيم"}, {"Hicham", "هشام"}, {"Nabil", "نبيل"},
	{"Adil", "عادل"}, {"Yassine", "ياسين"}, {"Othmane", "عثمان"}, {"Zakaria", "زكرياء"}, {"Jamal", "جمال"},
	{"Aziz", "عزيز"}, {"Tarik", "طارق"}, {"Soufiane", "سفيان"}, {"Ilyas", "إلياس"}, {"Amine", "أمين"},
}

var femaleGiven = [][2]string{
	{"Fatima", "فاطمة"}, {"Khadija", "خديجة"}, {"Aicha", "عائشة"}, {"Meryem", "مريم"}, {"Zineb", "زينب"},
	{"Amina", "أمينة"}, {"Salma", "سلمى"}, {"Hajar", "هاجر"}, {"Nadia", "نادية"}, {"Latifa", "لطيفة"},
	{"Naima", "نعيمة"}, {"Souad", "سعاد"}, {"Imane", "إيمان"}, {"Sanae", "سناء"}, {"Hanane", "حنان"},
	{"Rachida", "رشيدة"}, {"Malika", "مليكة"}, {"Ghizlane", "غزلان"}, {"Yasmine", "ياسمين"}, {"Houda", "هدى"},
	{"Loubna", "لبنى"}, {"Samira", "سميرة"}, {"Wafae", "وفاء"}, {"Kawtar", "كوثر"}, {"Asmae", "أسماء"},
	{"Nora", "نورة"}, {"Rim", "ريم"}, {"Siham", "سهام"}, {"Btissam", "ابتسام"}, {"Chaimae", "شيماء"},
}

var family = [][2]string{
	{"El Idrissi", "الإدريسي"}, {"Benali", "بنعلي"}, {"Alaoui", "العلوي"}, {"Bennani", "بناني"}, {"Tazi", "التازي"},
	{"El Fassi", "الفاسي"}, {"Berrada", "برادة"}, {"Chraibi", "الشرايبي"}, {"Lahlou", "لحلو"}, {"Benjelloun", "بنجلون"},
	{"El Amrani", "العمراني"}, {"Ouazzani", "الوزاني"}, {"Kettani", "الكتاني"}, {"Sqalli", "السقلي"}, {"Filali", "الفيلالي"},
	{"Zerouali", "الزروالي"}, {"Hajji", "الحجي"}, {"Naciri", "الناصري"}, {"Skalli", "السقالي"}, {"Bouzidi", "البوزيدي"},
	{"Ait Ali", "آيت علي"}, {"Amazigh", "أمازيغ"}, {"Ouchen", "أوشن"}, {"El Khattabi", "الخطابي"}, {"Ziani", "الزياني"},
	{"Cherkaoui", "الشرقاوي"}, {"Belhaj", "بلحاج"}, {"Mansouri", "المنصوري"}, {"Rifi", "الريفي"}, {"Doukkali", "الدكالي"},
	{"Sebti", "السبتي"}, {"Marrakchi", "المراكشي"}, {"Tahiri", "الطاهري"}, {"Jabri", "الجابري"}, {"Haddaoui", "الحداوي"},
	{"Lamrani", "اللمراني"}, {"Essaidi", "السعيدي"}, {"Oufkir", "أوفقير"}, {"Bakkali", "البقالي"}, {"Guessous", "كسوس"},
}

// places: commune, province.
var places = [][2]string{
	{"Rabat-Hassan", "Rabat"}, {"Salé-Tabriquet", "Salé"}, {"Casablanca-Anfa", "Casablanca"}, {"Ain Sebaa", "Casablanca"},
	{"Fès-Médina", "Fès"}, {"Marrakech-Médina", "Marrakech"}, {"Tanger-Médina", "Tanger-Assilah"}, {"Agadir", "Agadir Ida-Outanane"},
	{"Oujda", "Oujda-Angad"}, {"Meknès", "Meknès"}, {"Tétouan", "Tétouan"}, {"Kénitra", "Kénitra"},
	{"Safi", "Safi"}, {"Errachidia", "Errachidia"}, {"Ouarzazate", "Ouarzazate"}, {"Al Hoceima", "Al Hoceima"},
	{"Béni Mellal", "Béni Mellal"}, {"Khouribga", "Khouribga"}, {"Nador", "Nador"}, {"Laâyoune", "Laâyoune"},
}

var employers = []string{
	"OCP SA", "Maroc Telecom", "Attijariwafa Bank", "Renault Tanger Med", "Lesieur Cristal", "Marjane Holding",
	"Centrale Danone", "Cosumar", "Label'Vie", "Royal Air Maroc", "Managem", "Sothema", "Holmarcom", "Akwa Group",
	"ONCF", "Groupe Addoha", "Stellantis Kénitra", "Yazaki Morocco", "Lear Automotive", "Jet Contractors",
}
