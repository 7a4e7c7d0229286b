package console

import (
	"net/http"
	"strings"
)

// lang is a language of the console: en, fr or ar.
type lang string

func langFrom(s string) lang {
	switch {
	case strings.HasPrefix(s, "fr"):
		return "fr"
	case strings.HasPrefix(s, "ar"):
		return "ar"
	}
	return "en"
}

// langOf picks ?lang=, else the browser's first known language, else English.
func langOf(r *http.Request) lang {
	if l := r.URL.Query().Get("lang"); l != "" {
		return langFrom(l)
	}
	for _, part := range strings.Split(r.Header.Get("Accept-Language"), ",") {
		p := strings.TrimSpace(strings.SplitN(part, ";", 2)[0])
		if l := langFrom(strings.ToLower(p)); l != "en" || strings.HasPrefix(p, "en") {
			return l
		}
	}
	return "en"
}

// Dir is the text direction.
func (l lang) Dir() string {
	if l == "ar" {
		return "rtl"
	}
	return "ltr"
}

// T translates a message key (the English text when missing).
func (l lang) T(key string) string {
	if m, ok := messages[key]; ok {
		switch l {
		case "fr":
			return m[1]
		case "ar":
			return m[2]
		}
		return m[0]
	}
	return key
}

// messages: key → English, French, Arabic.
var messages = map[string][3]string{
	"title":             {"Auditor's console", "Console de l'auditeur", "وحدة تحكم المدقق"},
	"decisions":         {"Decisions", "Décisions", "القرارات"},
	"stats":             {"Statistics", "Statistiques", "الإحصاءات"},
	"findings":          {"Findings", "Anomalies", "الملاحظات"},
	"integrity":         {"Integrity", "Intégrité", "السلامة"},
	"from":              {"From (UTC)", "Du (UTC)", "من (UTC)"},
	"to":                {"To (UTC)", "Au (UTC)", "إلى (UTC)"},
	"consumer":          {"Consumer", "Demandeur", "الجهة الطالبة"},
	"provider":          {"Provider", "Fournisseur", "الجهة المزودة"},
	"service":           {"Service", "Service", "الخدمة"},
	"method":            {"Method", "Méthode", "الطريقة"},
	"basis":             {"Legal basis", "Base légale", "الأساس القانوني"},
	"decision":          {"Decision", "Décision", "القرار"},
	"reason":            {"Reason", "Motif", "السبب"},
	"citizen":           {"Citizen (eID)", "Citoyen (CNIE)", "المواطن (البطاقة الوطنية)"},
	"any":               {"any", "tous", "الكل"},
	"allowed":           {"allowed", "autorisée", "مسموح"},
	"refused":           {"refused", "refusée", "مرفوض"},
	"filter":            {"Filter", "Filtrer", "تصفية"},
	"find":              {"Find the citizen", "Chercher le citoyen", "البحث عن المواطن"},
	"export":            {"Export this selection (JSON Lines)", "Exporter cette sélection (JSON Lines)", "تصدير هذا الاختيار (JSON Lines)"},
	"time":              {"Time", "Heure", "الوقت"},
	"latency":           {"Latency", "Latence", "زمن الاستجابة"},
	"trace":             {"Trace", "Trace", "التتبع"},
	"next":              {"Next page", "Page suivante", "الصفحة التالية"},
	"none":              {"No decision matches.", "Aucune décision ne correspond.", "لا يوجد قرار مطابق."},
	"ckeynote":          {"Filtered by one citizen (ckey): the eID was not kept.", "Filtré sur un citoyen (ckey) : la CNIE n'a pas été conservée.", "مصفى حسب مواطن واحد (ckey): لم يتم الاحتفاظ بالرقم."},
	"spansfrom":         {"Spans read from", "Spans lus dans", "الأجزاء مقروءة من"},
	"spansmemory":       {"Spans from this gateway's memory (the most recent it keeps).", "Spans de la mémoire de cette passerelle (les plus récents qu'elle garde).", "أجزاء من ذاكرة هذا المعبر (الأحدث التي يحتفظ بها)."},
	"backendfailed":     {"The tracing backend could not be read; shown instead: this gateway's in-memory spans.", "Le système de traces n'a pas pu être lu ; à la place : les spans en mémoire de cette passerelle.", "تعذرت قراءة نظام التتبع؛ المعروض بدلاً منه: أجزاء ذاكرة هذا المعبر."},
	"backendnotfound":   {"The tracing backend has no span of this trace (yet: spans are exported in batches); shown instead: this gateway's in-memory spans.", "Le système de traces n'a aucun span de cette trace (pas encore : les spans sont exportés par lots) ; à la place : les spans en mémoire de cette passerelle.", "لا يملك نظام التتبع أي جزء من هذا التتبع (ليس بعد: تُصدَّر الأجزاء على دفعات)؛ المعروض بدلاً منه: أجزاء ذاكرة هذا المعبر."},
	"nospans":           {"No span of this trace is kept in this gateway's memory (evicted, or another replica).", "Aucun span de cette trace n'est gardé en mémoire par cette passerelle (évincé, ou une autre réplique).", "لا يحتفظ هذا المعبر بأي جزء من هذا التتبع (أزيل أو نسخة أخرى)."},
	"span":              {"Span", "Span", "المقطع"},
	"duration":          {"Duration", "Durée", "المدة"},
	"status":            {"Status", "Statut", "الحالة"},
	"queries":           {"Queries", "Requêtes", "الاستعلامات"},
	"refusals":          {"Refusals", "Refus", "الرفض"},
	"member":            {"Member", "Membre", "العضو"},
	"rule":              {"Rule", "Règle", "القاعدة"},
	"p50p99":            {"Latency p50 / p99 over time", "Latence p50 / p99 dans le temps", "زمن الاستجابة p50 / p99 عبر الوقت"},
	"nofindings":        {"No finding.", "Aucune anomalie.", "لا توجد ملاحظات."},
	"kind":              {"Kind", "Type", "النوع"},
	"subject":           {"Member or log", "Membre ou journal", "العضو أو السجل"},
	"evidence":          {"Evidence", "Éléments", "الأدلة"},
	"see":               {"decisions", "décisions", "القرارات"},
	"log":               {"Log", "Journal", "السجل"},
	"records":           {"Records", "Enregistrements", "السجلات"},
	"lastrecord":        {"Last record", "Dernier enregistrement", "آخر سجل"},
	"checkpoint":        {"Latest signed checkpoint", "Dernier point de contrôle signé", "آخر نقطة تحقق موقعة"},
	"verifynow":         {"Verify every log now", "Vérifier tous les journaux maintenant", "تحقق من كل السجلات الآن"},
	"lastverify":        {"Last verification", "Dernière vérification", "آخر تحقق"},
	"verifyok":          {"every log verifies", "tous les journaux sont vérifiés", "كل السجلات سليمة"},
	"verifyfail":        {"AUDIT LOG VERIFICATION FAILED", "ÉCHEC DE LA VÉRIFICATION DU JOURNAL D'AUDIT", "فشل التحقق من سجل التدقيق"},
	"notyet":            {"not yet run", "pas encore faite", "لم يجر بعد"},
	"audited":           {"Every page you open here is itself recorded in the audit log.", "Chaque page ouverte ici est elle-même inscrite au journal d'audit.", "كل صفحة تفتحها هنا تسجل بدورها في سجل التدقيق."},
	"probing":           {"Probing: a burst of refusals of one kind", "Sondage : rafale de refus d'un même motif", "استكشاف: سلسلة رفض من نوع واحد"},
	"distinct_citizens": {"Many distinct citizens, above the usual rate", "Nombreux citoyens distincts, au-dessus du rythme habituel", "عدد كبير من المواطنين فوق المعدل المعتاد"},
	"repeated_queries":  {"Repeated queries about one citizen", "Requêtes répétées sur un citoyen", "استعلامات متكررة عن مواطن واحد"},
	"off_hours":         {"Queries outside the usual hours", "Requêtes hors des heures habituelles", "استعلامات خارج الساعات المعتادة"},
	"log_stalled":       {"A gateway log stopped growing", "Un journal de passerelle ne croît plus", "سجل معبر توقف عن النمو"},
	"stale_checkpoint":  {"A checkpoint older than its interval", "Un point de contrôle plus ancien que son intervalle", "نقطة تحقق أقدم من فترتها"},
}
